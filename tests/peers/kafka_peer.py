"""A Kafka test peer on PyPI `kafka-python` (a client independent of the
sink's rskafka), for tests/kafka.rs.

    kafka_peer.py create  --bootstrap HOST:PORT --topic T [--partitions N]
        creates the topic and waits until its metadata shows every partition;
        prints {"created": T, "partitions": N}.
    kafka_peer.py consume --bootstrap HOST:PORT --topic T
        reads every record now in the topic, from the start of each
        partition to its end offset, and prints one JSON line per record:
        {"partition", "offset", "key", "headers": {name: value}, "value",
         "expected_partition"}
        (key, header values and value decoded as UTF-8).
    --ca-file CA.pem connects with TLS instead, trusting that CA.
"""

import argparse
import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.partitioner.default import murmur2


def connection(args):
    """Plaintext, or TLS trusting --ca-file."""
    if args.ca_file:
        return {"bootstrap_servers": args.bootstrap, "security_protocol": "SSL", "ssl_cafile": args.ca_file}
    return {"bootstrap_servers": args.bootstrap}


def create(args):
    admin = KafkaAdminClient(client_id="hookline-test-peer", **connection(args))
    try:
        admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    consumer = KafkaConsumer(**connection(args))
    deadline = time.monotonic() + 20
    while True:
        partitions = consumer.partitions_for_topic(args.topic) or set()
        if len(partitions) >= args.partitions:
            break
        if time.monotonic() > deadline:
            sys.exit(f"topic {args.topic} shows partitions {partitions} after 20 s")
        time.sleep(0.1)
        consumer._client.cluster.request_update()
        consumer._client.poll(timeout_ms=100)
    consumer.close()
    admin.close()
    print(json.dumps({"created": args.topic, "partitions": len(partitions)}))


def consume(args):
    consumer = KafkaConsumer(
        **connection(args),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    partitions = consumer.partitions_for_topic(args.topic)
    if not partitions:
        sys.exit(f"topic {args.topic} has no partitions (does it exist?)")
    assigned = [TopicPartition(args.topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    ends = consumer.end_offsets(assigned)
    deadline = time.monotonic() + 20
    out = []
    while any(consumer.position(tp) < ends[tp] for tp in assigned):
        if time.monotonic() > deadline:
            sys.exit(f"could not read up to the end offsets {ends} in 20 s")
        for tp, records in consumer.poll(timeout_ms=200).items():
            for r in records:
                if r.offset >= ends[tp]:
                    continue
                out.append({
                    "partition": r.partition,
                    "offset": r.offset,
                    "key": None if r.key is None else r.key.decode("utf-8"),
                    "headers": {k: v.decode("utf-8") for k, v in (r.headers or [])},
                    "value": None if r.value is None else r.value.decode("utf-8"),
                    # Where the Java client's default partitioner (which
                    # kafka-python's mirrors) puts a record with this key.
                    "expected_partition": None if r.key is None
                    else (murmur2(r.key) & 0x7FFFFFFF) % len(partitions),
                })
    consumer.close()
    for line in sorted(out, key=lambda r: (r["partition"], r["offset"])):
        print(json.dumps(line))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["create", "consume"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--ca-file", help="connect with TLS, trusting this PEM CA")
    args = parser.parse_args()
    {"create": create, "consume": consume}[args.command](args)


if __name__ == "__main__":
    main()
