#!/usr/bin/env python3
"""Ingest-to-delivery latency of single events with batching off.

Starts a receiver (in this process), writes a one-app apps directory, starts
the `hookline` binary, then sends N events one at a time through the signed
native ingest and times each from just before the request until the
receiver has it. Prints p50/p90/p99/max.

    python3 scripts/bench/latency.py [--bin target/release/hookline] [-n 2000]
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

arrivals = {}
arrived = threading.Condition()


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        now = time.perf_counter()
        for event in json.loads(body)["events"]:
            with arrived:
                arrivals[event["channel"]] = now
                arrived.notify_all()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def signed_path(app, key, secret, body):
    path = f"/apps/{app}/webhook_events"
    params = {
        "auth_key": key,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    to_sign = "POST\n" + path + "\n" + "&".join(f"{k}={params[k]}" for k in sorted(params))
    params["auth_signature"] = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return path + "?" + urllib.parse.urlencode(params)


def report(title, samples, unit_format="{:.3f}"):
    """Prints p50/p90/p99/max of `samples` (ms)."""
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    figures = "  ".join(f"{name} {unit_format.format(value)} ms" for name, value in
                        [("p50", pick(0.5)), ("p90", pick(0.9)), ("p99", pick(0.99)), ("max", samples[-1])])
    print(f"{title}:\n  {figures}  mean {unit_format.format(statistics.mean(samples))} ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/hookline")
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = receiver.server_address[1]

    apps = tempfile.mkdtemp()
    with open(os.path.join(apps, "bench.json"), "w") as f:
        json.dump({"id": "bench", "key": "bk", "secret": "bs", "batching": {"enabled": False},
                   "webhooks": [{"url": f"http://127.0.0.1:{port}/h", "event_types": ["client_event"]}]}, f)
    daemon = subprocess.Popen(
        [args.bin, "serve", "--apps", apps, "--listen", "127.0.0.1:0", "--data-dir", tempfile.mkdtemp()],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "RUST_LOG": "warn"})
    line = daemon.stdout.readline()
    host, hport = line.strip().removeprefix("listening on ").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(hport))

    samples = []
    for i in range(-100, args.n):  # the first 100 warm up connections and caches
        channel = f"lat-{i}"
        body = json.dumps({"events": [{"name": "client_event", "channel": channel, "event": "client-x",
                                       "data": "{\"n\":%d}" % i}]}).encode()
        path = signed_path("bench", "bk", "bs", body)
        start = time.perf_counter()
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        with arrived:
            arrived.wait_for(lambda: channel in arrivals, timeout=10)
        if i >= 0:
            samples.append((arrivals[channel] - start) * 1000)
    daemon.terminate()
    daemon.wait()
    report(f"{len(samples)} single events, batching off, sequential", samples)

if __name__ == "__main__":
    sys.exit(main())
