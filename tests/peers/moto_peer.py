#!/usr/bin/env python3
"""moto (a local AWS: SQS, SNS, EventBridge, ...) for the AWS sinks' tests, driven with boto3.

Usage:
    python moto_peer.py serve
        Starts moto's server on 127.0.0.1, any free port, prints exactly one line
        "listening on 127.0.0.1:PORT" on stdout, serves until SIGTERM/SIGINT.

    python moto_peer.py --endpoint URL [--region R] COMMAND ...
        create-queue NAME [--attribute KEY=VALUE]...   prints {"url": QUEUE_URL}
            (a NAME ending in .fifo makes a FIFO queue; FifoQueue=true is added)
        delete-queue QUEUE_URL                         prints {}
        receive-all QUEUE_URL                          prints a JSON array
            Receives until a receive comes back empty, DELETING what it received, and prints
            one object per message: {"body": TEXT, "attributes": {NAME: STRING VALUE},
            "message_id", "group_id" (FIFO, else null), "deduplication_id" (FIFO, else null),
            "receive_count"}. Call it again to get what arrives later.
        call SERVICE OPERATION JSON                    prints the answer as JSON
            Any boto3 client call, e.g. `call sns create_topic '{"Name": "t"}'`.

Credentials are fixed test ones (moto accepts any); the default region is us-east-1.
"""

import argparse
import datetime
import json
import os
import signal
import sys
import threading


def serve():
    import logging

    # werkzeug logs every request on stderr: noise in the tests' output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sys.stdout.write("listening on %s:%d\n" % (host, port))
    sys.stdout.flush()
    done.wait()
    server.stop()


def client(args, service):
    import boto3

    return boto3.client(
        service,
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def default(o):
    if isinstance(o, (datetime.datetime, datetime.date)):
        return o.isoformat()
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    raise TypeError(repr(o))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint")
    parser.add_argument("--region", default="us-east-1")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve")
    p = sub.add_parser("create-queue")
    p.add_argument("name")
    p.add_argument("--attribute", action="append", default=[])
    p = sub.add_parser("delete-queue")
    p.add_argument("url")
    p = sub.add_parser("receive-all")
    p.add_argument("url")
    p = sub.add_parser("call")
    p.add_argument("service")
    p.add_argument("operation")
    p.add_argument("params", nargs="?", default="{}")
    args = parser.parse_args()

    if args.command == "serve":
        return serve()
    if not args.endpoint:
        parser.error("--endpoint is required")
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)

    if args.command == "create-queue":
        attributes = dict(a.split("=", 1) for a in args.attribute)
        if args.name.endswith(".fifo"):
            attributes.setdefault("FifoQueue", "true")
        url = client(args, "sqs").create_queue(QueueName=args.name, Attributes=attributes)["QueueUrl"]
        out = {"url": url}
    elif args.command == "delete-queue":
        client(args, "sqs").delete_queue(QueueUrl=args.url)
        out = {}
    elif args.command == "receive-all":
        sqs = client(args, "sqs")
        out = []
        while True:
            answer = sqs.receive_message(
                QueueUrl=args.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=300,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            for m in messages:
                system = m.get("Attributes", {})
                out.append({
                    "body": m["Body"],
                    "attributes": {k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()},
                    "message_id": m["MessageId"],
                    "group_id": system.get("MessageGroupId"),
                    "deduplication_id": system.get("MessageDeduplicationId"),
                    "receive_count": int(system.get("ApproximateReceiveCount", "1")),
                })
            sqs.delete_message_batch(
                QueueUrl=args.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
    else:
        answer = getattr(client(args, args.service), args.operation)(**json.loads(args.params))
        answer.pop("ResponseMetadata", None)
        out = answer
    sys.stdout.write(json.dumps(out, default=default) + "\n")


if __name__ == "__main__":
    main()
