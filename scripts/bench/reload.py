#!/usr/bin/env python3
"""Reload latency: app file write -> first event routed by the new config.

Starts a receiver (in this process) and the `hookline` binary watching a
temporary apps directory. For each round it rewrites the app file (write to
a temp file, rename) so the webhook points at a new path, then keeps sending
single events (batching off) until one arrives at the new path; the time
from the rename to that arrival is one sample. Prints p50/p90/p99/max.

    python3 scripts/bench/reload.py [--bin target/release/hookline] [-n 200]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latency import Receiver, ThreadingHTTPServer, signed_path, arrived, report  # noqa: E402

paths_seen = {}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/hookline")
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()

    class PathReceiver(Receiver):
        def do_POST(self):
            with arrived:
                paths_seen.setdefault(self.path, time.perf_counter())
                arrived.notify_all()
            super().do_POST()

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), PathReceiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = receiver.server_address[1]
    apps = tempfile.mkdtemp()
    app_file = os.path.join(apps, "bench.json")

    def write_config(path):
        tmp = os.path.join(apps, ".bench.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"id": "bench", "key": "bk", "secret": "bs", "batching": {"enabled": False},
                       "webhooks": [{"url": f"http://127.0.0.1:{port}{path}", "event_types": ["client_event"]}]}, f)
        os.rename(tmp, app_file)

    write_config("/round-0")
    daemon = subprocess.Popen(
        [args.bin, "serve", "--apps", apps, "--listen", "127.0.0.1:0", "--data-dir", tempfile.mkdtemp()],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RUST_LOG": "warn"})
    host, hport = daemon.stdout.readline().strip().removeprefix("listening on ").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(hport))

    samples = []
    for round_ in range(1, args.n + 1):
        path = f"/round-{round_}"
        start = time.perf_counter()
        write_config(path)
        deadline = start + 10
        while True:
            body = json.dumps({"events": [{"name": "client_event", "channel": f"r{round_}", "event": "x"}]}).encode()
            conn.request("POST", signed_path("bench", "bk", "bs", body), body, {"Content-Type": "application/json"})
            conn.getresponse().read()
            with arrived:
                arrived.wait_for(lambda: path in paths_seen, timeout=0.002)
                if path in paths_seen:
                    samples.append((paths_seen[path] - start) * 1000)
                    break
            if time.perf_counter() > deadline:
                sys.exit(f"round {round_}: the new config never routed an event")
    daemon.terminate()
    daemon.wait()
    report(f"{len(samples)} reloads (write+rename -> first event at the new URL)", samples, "{:.1f}")

if __name__ == "__main__":
    sys.exit(main())
