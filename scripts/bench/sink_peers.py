"""The real services the load benchmark's queue and stream sinks deliver to.

`start(kind, run_dir)` starts one service of the run's own and returns
(webhook keys selecting that sink, a function that stops the service):

  * http         a bare hyper server (every answer 200 {}), as before;
  * wasm         the CloudEvents example sink component (examples/sinks/
                 cloudevents, batch mode: one request per batch) sending to
                 that same bare hyper server;
  * nats         nats-server with JetStream, a file-backed stream on `bench.>`;
  * kafka        the tansu broker (memory storage), a one-partition topic;
  * sqs, sns,    moto's server mode (Python: its figures measure moto, not
    eventbridge  Hookline), a standard queue / a topic / the default bus.

The peers come from scripts/setup-tests.sh: Debian nats-server, tansu in
the peer cache, and moto, boto3 and kafka-python in tests/peers/.venv.
"""

import json
import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, "tests", "peers", ".venv", "bin")
TANSU = os.path.join(os.environ.get("HOOKLINE_PEER_CACHE", os.path.expanduser("~/.cache/hookline-peers")),
                     "tansu-0.6.0", "bin", "tansu")
KINDS = ("http", "wasm", "nats", "kafka", "sqs", "sns", "eventbridge")
AWS_KEYS = {"accessKeyId": "bench", "secretAccessKey": "bench"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{what} did not listen on {port}")


def stopper(*procs):
    def stop():
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return stop


def nats_request(port, subject, payload):
    """One request over the NATS protocol (a JetStream API call), by hand:
    the benchmark needs no NATS client library for it."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        f.readline()  # INFO
        data = json.dumps(payload).encode()
        s.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n'
                  b"SUB _INBOX.bench 1\r\n"
                  b"PUB %s _INBOX.bench %d\r\n%s\r\n" % (subject.encode(), len(data), data))
        while True:
            line = f.readline()
            if not line:
                raise SystemExit(f"nats-server closed the connection during {subject}")
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                n = int(line.split()[-1])
                answer = json.loads(f.read(n + 2)[:n])
                if "error" in answer:
                    raise SystemExit(f"{subject}: {answer['error']}")
                return answer


def start(kind, run_dir, http_receiver=None):
    if kind == "http":
        return {"url": f"http://{http_receiver}/hook"}, lambda: None
    if kind == "wasm":
        subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip2", "--target-dir",
                        os.path.join(ROOT, "target", "wasm"), "-p", "cloudevents"], cwd=ROOT, check=True)
        wasm = os.path.join(ROOT, "target", "wasm", "wasm32-wasip2", "release", "cloudevents.wasm")
        return {"sink": {"wasm": wasm, "config": {"url": f"http://{http_receiver}/hook"},
                         "allowed_hosts": [{"origin": f"http://{http_receiver}", "allow_private": True}]}}, \
            lambda: None
    if kind == "nats":
        port = free_port()
        store = os.path.join(run_dir, "nats")
        proc = subprocess.Popen(["nats-server", "-js", "-sd", store, "-a", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, proc, "nats-server")
        nats_request(port, "$JS.API.STREAM.CREATE.BENCH",
                     {"name": "BENCH", "subjects": ["bench.>"], "storage": "file", "retention": "limits",
                      "duplicate_window": 120_000_000_000})
        return {"nats_subject": "bench.hooks", "nats": {"url": f"nats://127.0.0.1:{port}"}}, stopper(proc)
    if kind == "kafka":
        if not os.path.exists(TANSU):
            raise SystemExit(f"{TANSU} is missing: run scripts/setup-tests.sh")
        port = free_port()
        proc = subprocess.Popen([TANSU, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
                                 "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
                                 "--storage-engine", "memory://tansu/"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, proc, "tansu")
        subprocess.run([os.path.join(VENV, "python"), "-c",
                        "import sys\nfrom kafka.admin import KafkaAdminClient, NewTopic\n"
                        "KafkaAdminClient(bootstrap_servers=sys.argv[1]).create_topics("
                        "[NewTopic('bench', num_partitions=1, replication_factor=1)])",
                        f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
        return {"kafka_topic": "bench", "kafka": {"brokers": [f"127.0.0.1:{port}"]}}, stopper(proc)
    if kind in ("sqs", "sns", "eventbridge"):
        port = free_port()
        proc = subprocess.Popen([os.path.join(VENV, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, proc, "moto_server")
        endpoint = f"http://127.0.0.1:{port}"
        create = {
            "sqs": "print(boto3.client('sqs', **kw).create_queue(QueueName='bench')['QueueUrl'])",
            "sns": "print(boto3.client('sns', **kw).create_topic(Name='bench')['TopicArn'])",
            "eventbridge": "print(boto3.client('events', **kw).create_event_bus(Name='bench')['EventBusArn'])",
        }[kind]
        target = subprocess.run(
            [os.path.join(VENV, "python"), "-c",
             "import sys, boto3\nkw = dict(endpoint_url=sys.argv[1], region_name='us-east-1', "
             "aws_access_key_id='bench', aws_secret_access_key='bench')\n" + create, endpoint],
            check=True, capture_output=True, text=True).stdout.strip()
        selector = {"sqs": "sqs_queue_url", "sns": "sns_topic_arn", "eventbridge": "eventbridge_bus"}[kind]
        options = {"region": "us-east-1", "client_options": {"credentials": AWS_KEYS, "endpoint": endpoint}}
        return {selector: target, kind: options}, stopper(proc)
    raise SystemExit(f"--sink: unknown kind {kind!r}; choose from {', '.join(KINDS)}")
