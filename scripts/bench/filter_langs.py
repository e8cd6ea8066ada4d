#!/usr/bin/env python3
"""Filters by language: drop-by-channel in Rust, JavaScript (QuickJS and
StarlingMonkey) and Python (CPython), each on one webhook of its own daemon.

For each it prints the component's size, the time from start to
listening with a cold compile cache (filters load in the background: the
daemon listens before they compile) and until the first delivery of a
request sent at once (through the filter, so after it compiled), the start
with a warm cache, the mean time per filter call (10 events a call, from
hookline_filter_duration_seconds), and the daemon's RSS with the filter
loaded and after the calls, against a daemon with no filter. Deliveries
go to a bare hyper receiver (examples/bench/bare_hyper.rs).

    python3 scripts/bench/filter_langs.py [--bin target/release/hookline] [-n 500]

Needs the JavaScript and Python SDKs installed (scripts/setup-tests.sh).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latency import signed_path  # noqa: E402

CONFIG = {"channels": ["debug-*"], "user_ids": ["bot"]}


def build(out_dir):
    """The three drop-by-channel components, built from source."""
    target = os.path.join(ROOT, "target/wasm")
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip2", "-p", "drop-by-channel",
                    "--target-dir", target], cwd=ROOT, check=True, capture_output=True)
    rust = os.path.join(target, "wasm32-wasip2/release/drop_by_channel.wasm")
    js = os.path.join(out_dir, "dbc_js.wasm")
    js_dir = os.path.join(ROOT, "examples/filters/drop-by-channel-js")
    subprocess.run(["node", "node_modules/@hookline/filter/bin/hookline-filter-js.mjs", "build", "filter.js",
                    "-o", js], cwd=js_dir, check=True, capture_output=True, env=dict(os.environ, HOOKLINE_BIN=""))
    sm = os.path.join(out_dir, "dbc_js_sm.wasm")
    subprocess.run(["node", "node_modules/@hookline/filter/bin/hookline-filter-js.mjs", "build", "filter.js",
                    "--engine", "starlingmonkey", "-o", sm], cwd=js_dir, check=True, capture_output=True,
                   env=dict(os.environ, HOOKLINE_BIN=""))
    py = os.path.join(out_dir, "dbc_py.wasm")
    venv = os.path.join(ROOT, "tests/peers/.venv/bin/hookline-filter-py")
    subprocess.run([venv, "build", "filter.py", "-o", py], check=True, capture_output=True,
                   cwd=os.path.join(ROOT, "examples/filters/drop-by-channel-py"), env=dict(os.environ, HOOKLINE_BIN=""))
    return [("none", None), ("rust", rust), ("javascript", js), ("javascript (starlingmonkey)", sm),
            ("python", py)]


def rss_mib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def start(binary, apps, data, began=None):
    began = began or time.monotonic()
    proc = subprocess.Popen([binary, "serve", "--apps", apps, "--data-dir", data, "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, RUST_LOG="warn"))
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, line.split()[-1], time.monotonic() - began
    raise SystemExit("hookline did not start")


def stop(proc):
    proc.terminate()
    proc.wait(timeout=30)


def body():
    events = [{"name": "channel_occupied", "channel": f"room-{i}", "user_id": f"u{i}"} for i in range(9)]
    events.append({"name": "channel_occupied", "channel": "debug-1"})
    return json.dumps({"events": events}, separators=(",", ":"))


def compiling(addr):
    """The filter files `/readyz` lists as still loading (none for a build
    that loads them before it listens)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("GET", "/readyz")
    return json.loads(conn.getresponse().read()).get("compiling", [])


def metric(addr, name):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    # Summed over the metric's labels, if it has any.
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target/release/hookline"))
    parser.add_argument("--receiver", default=os.path.join(ROOT, "target/release/examples/bare-hyper"))
    parser.add_argument("-n", type=int, default=500, help="requests of 10 events per language")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="hookline-filter-langs-")
    rows = []
    receiver = subprocess.Popen([args.receiver, "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    receiver_addr = next(line.split()[-1] for line in receiver.stdout if line.startswith("listening on "))
    url = f"http://{receiver_addr}/"
    try:
        for lang, wasm in build(tmp):
            run = tempfile.mkdtemp(dir=tmp)
            apps, data = os.path.join(run, "apps"), os.path.join(run, "data")
            os.makedirs(apps)
            webhook = {"url": url, "event_types": ["channel_occupied"]}
            if wasm:
                # The filter runs for every batch of the app's (batching off).
                webhook = {"url": url, "event_types": ["channel_occupied"],
                           "filters": [{"wasm": wasm, "config": CONFIG, "on_error": "skip"}]}
            with open(os.path.join(apps, "a.json"), "w") as f:
                json.dump({"id": "a", "key": "k", "secret": "s", "batching": {"enabled": False},
                           "retry": {"max_attempts": 1}, "webhooks": [webhook]}, f)
            began = time.monotonic()
            proc, addr, cold = start(args.bin, apps, data, began)
            payload = body()
            host, port = addr.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port))
            conn.request("POST", signed_path("a", "k", "s", payload.encode()), payload,
                         {"Content-Type": "application/json"})
            conn.getresponse().read()
            deadline = time.time() + 120
            while metric(addr, "hookline_events_delivered_total") < 1 and time.time() < deadline:
                time.sleep(0.01)
            first_delivery = time.monotonic() - began
            stop(proc)
            proc, addr, warm = start(args.bin, apps, data)
            # Filters load in the background (from the cache here): the
            # calls and RSS below are those of a loaded filter.
            while compiling(addr):
                time.sleep(0.01)
            loaded = rss_mib(proc.pid)
            payload = body()
            path = signed_path("a", "k", "s", payload.encode())
            host, port = addr.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port))
            for _ in range(args.n):
                conn.request("POST", path, payload, {"Content-Type": "application/json"})
                conn.getresponse().read()
            deadline = time.time() + 60
            while wasm and metric(addr, "hookline_filter_duration_seconds_count") < args.n and time.time() < deadline:
                time.sleep(0.1)
            calls = metric(addr, "hookline_filter_duration_seconds_count")
            per_call = metric(addr, "hookline_filter_duration_seconds_sum") / calls * 1e6 if calls else 0
            after = rss_mib(proc.pid, "VmHWM")
            stop(proc)
            size = os.path.getsize(wasm) / 1e6 if wasm else 0
            row = (f"| {lang} | {size:.2f} MB | {cold * 1000:.0f} ms | {first_delivery * 1000:.0f} ms "
                   f"| {warm * 1000:.0f} ms | "
                   f"{per_call:.0f} µs | {loaded:.1f} MiB | {after:.1f} MiB |")
            print(row, flush=True)
            rows.append(row)
    finally:
        receiver.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| filter | component | cold cache: listening | cold cache: first delivery | cached: listening "
          "| per call (10 events) | RSS loaded | peak RSS after calls |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
