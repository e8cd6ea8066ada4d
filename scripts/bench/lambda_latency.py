#!/usr/bin/env python3
"""Invocation latency of the lambda sink against the local Invoke server.

Starts tests/peers/lambda_server.py (which verifies every request's SigV4
signature with botocore) and the `hookline` binary with one app whose
webhook is a Lambda function (Event invocations, batching off), then sends
N single events one at a time and times each from just before the ingest
request until the server has answered the invocation. The server's own
SigV4 check (Python) is included in the figure.

    tests/peers/.venv/bin/python scripts/bench/lambda_latency.py [--bin target/release/hookline] [-n 500]
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from latency import signed_path, report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/hookline")
    parser.add_argument("-n", type=int, default=500)
    args = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests/peers/lambda_server.py"), "--port", "0",
         "--credentials", "AKIDBENCH:bench-secret"], stdout=subprocess.PIPE, text=True)
    lhost, lport = server.stdout.readline().strip().removeprefix("listening on ").rsplit(":", 1)
    control = http.client.HTTPConnection(lhost, int(lport))

    def invocations():
        control.request("GET", "/_test/invocations")
        return [i for i in json.loads(control.getresponse().read()) if i["status"] is not None]

    apps = tempfile.mkdtemp()
    with open(os.path.join(apps, "bench.json"), "w") as f:
        json.dump({"id": "bench", "key": "bk", "secret": "bs", "batching": {"enabled": False},
                   "webhooks": [{"lambda_function": "bench-fn", "event_types": ["client_event"],
                                 "lambda": {"async": True, "region": "eu-west-1", "client_options": {
                                     "credentials": {"accessKeyId": "AKIDBENCH", "secretAccessKey": "bench-secret"},
                                     "endpoint": f"http://{lhost}:{lport}"}}}]}, f)
    daemon = subprocess.Popen(
        [args.bin, "serve", "--apps", apps, "--listen", "127.0.0.1:0", "--data-dir", tempfile.mkdtemp()],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "RUST_LOG": "warn", "AWS_EC2_METADATA_DISABLED": "true"})
    host, port = daemon.stdout.readline().strip().removeprefix("listening on ").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))

    samples = []
    for i in range(-20, args.n):
        body = json.dumps({"events": [{"name": "client_event", "channel": f"c{i}", "event": "x"}]}).encode()
        before = len(invocations())
        start = time.perf_counter()
        conn.request("POST", signed_path("bench", "bk", "bs", body), body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        while len(invocations()) == before:
            pass
        if i >= 0:
            samples.append((time.perf_counter() - start) * 1000)
    bad = [i for i in invocations() if not i["signature_valid"]]
    daemon.terminate()
    server.terminate()
    report(f"{len(samples)} single-event Event invocations, sequential ({len(bad)} badly signed)", samples, "{:.1f}")

if __name__ == "__main__":
    sys.exit(main())
