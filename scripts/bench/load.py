#!/usr/bin/env python3
"""End-to-end load benchmark: Hookline against the machine's limit.

In one run, on this machine:
  * a bare hyper server (examples/bench/bare_hyper.rs, every answer 200 {})
    is driven by wrk at each concurrency: the physical-limit baseline;
  * Hookline, on its embedded store, delivering to another bare hyper server
    (a fast receiver), is driven by the same wrk with a signed native ingest
    request, for each durability (fsync, memory), batching (off, on) and
    events per request (1, 10).

For each it prints accepted requests/s and events/s, delivered events/s
(during the run), p50/p99 ingest->delivery latency (from Hookline's
histogram, millisecond resolution), peak RSS, the ratio to the baseline's
requests/s, and the daemon's CPU time per accepted event (user + system,
from /proc). `--filter none,drop-by-channel` adds runs whose webhook has the
drop-by-channel example filter (built for wasm32-wasip2; it keeps every
event of this load), so the difference in CPU per event is the filter
stage's share of the pipeline; `drop-by-channel-js` (QuickJS) and
`drop-by-channel-py` (CPython) are the same filter built from JavaScript and
Python (their SDKs come from scripts/setup-tests.sh).

`--store embedded,redis` adds runs on the Redis store (a redis-server of the
run's own, AOF with `appendfsync always` under fsync durability), and
`--nodes 1,3` runs that many daemons on it, with the load split evenly over
them (one wrk per node, concurrency divided); delivered events/s and
latency are summed over the nodes, CPU per event counts the daemons (and,
in brackets, Redis), and peak RSS is the largest daemon's.

`--sink http,wasm,nats,kafka,sqs,sns,eventbridge` runs each row once per sink
kind, each against a real service of the run's own (scripts/bench/
sink_peers.py: nats-server with JetStream, the tansu Kafka broker, moto for
the AWS kinds, whose figures measure moto, a Python server, more than
Hookline); http (the default) is the bare hyper receiver; wasm is the
CloudEvents example sink component posting to that same receiver.

`--scale` is the scaling mode (scripts/bench/scale.py): one Redis, 12 apps,
batching on, 10 events per request, each daemon capped at 30 % of a CPU by a
cgroup; delivered events/s at 1 and 3 nodes and each node's share.

`--compare REV` builds another revision (a git worktree of REV, built into
target/compare-REV) and runs every Hookline row on both builds, this tree's
and REV's, interleaved (this, REV, this, REV…; `--rounds`, default 2, pairs
per row), then prints each row's medians and the ratio of this tree to REV.
Deliveries/s (successful delivery attempts) is its own column: with batching
off it is the rate of signed deliveries, every event its own.

`--compare-env 'NAME=VALUE …'` compares this tree's build with itself run
under those extra environment variables instead (interleaved the same way):
the cost of a setting, e.g. `HOOKLINE_DELIVERY_ATTEMPT_LOG=0` (the attempt
log off) or `OTEL_EXPORTER_OTLP_ENDPOINT=… OTEL_TRACES_SAMPLER_ARG=0.01`
(traces on); the ratio is then the plain build ÷ the one with the variables.

`--baseline-work-ns 500,1000,2000` adds bare hyper rows whose server
busy-waits that long per request: the calibration curve of what a given
per-request cost is worth in requests/s on this machine's loopback.

    python3 scripts/bench/load.py [--duration 10] [--concurrency 8,32] [--filter none,drop-by-channel]
                                  [--store embedded,redis] [--nodes 1,3] [--sink http,nats] [--no-build]
                                  [--compare REV [--rounds 2]]

Installs wrk (Debian package) if it is missing.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latency import signed_path  # noqa: E402
import sink_peers  # noqa: E402


def ensure_wrk():
    if shutil.which("wrk"):
        return
    print("installing wrk (apt-get install wrk)", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)


def start(cmd, env=None):
    """Starts a process that prints `listening on ADDR`; returns (proc, addr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    deadline = time.time() + 30
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, line.split()[-1]
        if time.time() > deadline:
            break
    proc.kill()
    raise SystemExit(f"{cmd[0]} did not start")


def wrk(url, body, concurrency, duration, script_dir, delay_ms=0):
    """Drives `url` with wrk; with `delay_ms`, each connection waits that
    long before each request (wrk's `delay()`), which holds the load below
    saturation at about concurrency * 1000 / delay_ms requests/s."""
    script = os.path.join(script_dir, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {json.dumps(body)}\n")
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        if delay_ms:
            f.write(f"function delay() return {int(delay_ms)} end\n")
    threads = min(concurrency, 2)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{duration}s", "-s", script, url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return rps, int(bad.group(1)) if bad else 0, errors.group(1) if errors else ""


def metrics(addr):
    text = urllib.request.urlopen(f"http://{addr}/metrics").read().decode()
    delivered = 0.0
    deliveries = 0.0
    buckets = []
    for line in text.splitlines():
        if line.startswith("hookline_events_delivered_total"):
            delivered += float(line.split()[-1])
        if line.startswith("hookline_delivery_attempts_total") and 'outcome="success"' in line:
            deliveries += float(line.split()[-1])
        m = re.match(r'hookline_delivery_latency_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), float(m.group(2))))
    return delivered, deliveries, buckets


def quantile(before, after, q):
    counts = [(le, a - b) for (le, a), (_, b) in zip(after, before)]
    total = counts[-1][1] if counts else 0
    if total == 0:
        return None
    for le, c in counts:
        if c >= q * total:
            return le
    return None


def cpu_seconds(pid):
    """User + system CPU time of a process so far (/proc/PID/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


FILTERS = ("drop-by-channel", "drop-by-channel-js", "drop-by-channel-py")


def build_filters(names, out_dir):
    """The drop-by-channel example filters named, built from source for
    wasm32-wasip2: `drop-by-channel` (Rust), `-js` (QuickJS) and `-py`
    (CPython; the JS and Python SDKs come from scripts/setup-tests.sh)."""
    unknown = [n for n in names if n != "none" and n not in FILTERS]
    if unknown:
        raise SystemExit(f"--filter: unknown filter(s) {unknown}; choose from none, {', '.join(FILTERS)}")
    if not any(n in FILTERS for n in names):
        return {}
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from filter_langs import build  # noqa: E402  (builds all three languages)
    built = dict(build(out_dir))
    return {"drop-by-channel": built["rust"], "drop-by-channel-js": built["javascript"],
            "drop-by-channel-py": built["python"]}


def status_mib(pid, field):
    """A memory figure from /proc/PID/status (`VmRSS`, `VmHWM` for the peak), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def body_of(n):
    events = [
        {"name": "client_event", "channel": f"private-room-{i}", "event": "client-message",
         "data": json.dumps({"text": "hello", "n": i}), "socket_id": "123.456", "user_id": f"user-{i}"}
        for i in range(n)
    ]
    return json.dumps({"events": events}, separators=(",", ":"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target/release/hookline"))
    parser.add_argument("--baseline", default=os.path.join(ROOT, "target/release/examples/bare-hyper"))
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--durability", default="fsync,memory")
    parser.add_argument("--batching", default="off,on,none",
                        help="off, on, or none (ingest only: the webhook wants none of the events)")
    parser.add_argument("--events", default="1,10", help="events per request")
    parser.add_argument("--filter", default="none",
                        help="the webhook's filter, one row each: none, drop-by-channel (Rust), "
                             "drop-by-channel-js (QuickJS), drop-by-channel-py (CPython), e.g. none,drop-by-channel")
    parser.add_argument("--store", default="embedded", help="embedded, redis, or both (embedded,redis)")
    parser.add_argument("--nodes", default=None,
                        help="daemons per run on the Redis store, e.g. 1,3 (default 1; with --scale, 1,3)")
    parser.add_argument("--sink", default="http",
                        help="the webhook's sink kind, one row each: " + ", ".join(sink_peers.KINDS))
    parser.add_argument("--delay-ms", type=int, default=0,
                        help="each connection waits this long before each request: a load below saturation "
                             "(about concurrency * 1000 / delay requests/s); 0 (default) drives as fast as it goes")
    parser.add_argument("--baseline-work-ns", default="",
                        help="also drive bare hyper doing this much busy work per request, one row each "
                             "(e.g. 500,1000,2000): what a given per-request cost is worth in req/s here")
    parser.add_argument("--scale", action="store_true",
                        help="the scaling mode (scripts/bench/scale.py): one Redis, --apps apps, each daemon capped "
                             "at --cpu-quota %% of a CPU; delivery at each of --nodes (default there 1,3)")
    parser.add_argument("--apps", type=int, default=12, help="--scale: apps driven evenly")
    parser.add_argument("--cpu-quota", type=int, default=30, help="--scale: each daemon's cap, %% of one CPU")
    parser.add_argument("--warmup", type=int, default=15, help="--scale: seconds of load before measuring")
    parser.add_argument("--repeat", type=int, default=3, help="--scale: rounds of every node count")
    parser.add_argument("--compare", default=None, metavar="REV",
                        help="also run every Hookline row on REV's build (its own worktree and target directory), "
                             "interleaved with this tree's")
    parser.add_argument("--compare-env", default=None, metavar="'NAME=VALUE ...'",
                        help="compare this tree's build with itself under these extra environment variables")
    parser.add_argument("--rounds", type=int, default=2, help="--compare: pairs of runs per row")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()

    ensure_wrk()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "hookline", "--example", "bare-hyper"],
                       cwd=ROOT, check=True)
    builds = [("this", args.bin)]
    if args.compare:
        builds.append((args.compare, build_revision(args.compare)))
    elif args.compare_env:
        args.compare = "env " + args.compare_env
        builds.append((args.compare, env_wrapper(args.bin, args.compare_env)))
    if args.scale:
        import scale  # noqa: E402
        args.nodes = args.nodes or "1,3"
        if args.concurrency == "8,32":
            args.concurrency = "32"
        if args.events == "1,10":
            args.events = "10"
        scale.run(args, sys.modules[__name__])
        return
    args.nodes = args.nodes or "1"
    filters = args.filter.split(",")
    wasm_dir = tempfile.mkdtemp(prefix="hookline-load-filters-")
    args.filter_wasm = build_filters(filters, wasm_dir)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print(f"# machine: {cpu} cores, {os.uname().release}; wrk {args.duration}s per row")

    tmp = tempfile.mkdtemp(prefix="hookline-load-")
    receiver, receiver_addr = start([args.baseline, "127.0.0.1:0"])
    baseline, baseline_addr = start([args.baseline, "127.0.0.1:0"])
    results = []
    try:
        baseline_rps = {}
        for c in concurrencies:
            rps, bad, errors = wrk(f"http://{baseline_addr}/", body_of(1), c, args.duration, tmp)
            baseline_rps[c] = rps
            print(f"baseline bare hyper      c={c:<3} {rps:>10.0f} req/s {errors}", flush=True)
            for work_ns in [int(w) for w in args.baseline_work_ns.split(",") if w]:
                busy, busy_addr = start([args.baseline, "127.0.0.1:0"],
                                        env=dict(os.environ, BARE_HYPER_WORK_NS=str(work_ns)))
                try:
                    busy_rps, _, busy_errors = wrk(f"http://{busy_addr}/", body_of(1), c, args.duration, tmp)
                finally:
                    busy.kill()
                    busy.wait()
                share = f"{busy_rps / rps:.0%} of bare" if rps else "bare answered nothing"
                print(f"  + {work_ns:>5} ns of work  c={c:<3} {busy_rps:>10.0f} req/s ({share}) {busy_errors}",
                      flush=True)
        setups = [("embedded", 1)] if "embedded" in args.store.split(",") else []
        if "redis" in args.store.split(","):
            setups += [("redis", int(k)) for k in args.nodes.split(",")]
        for durability in args.durability.split(","):
            for batching in args.batching.split(","):
                for n in [int(x) for x in args.events.split(",")]:
                    for c in concurrencies:
                        for filt in filters:
                            for store, nodes in setups:
                                for sink in args.sink.split(","):
                                    row = []
                                    for _ in range(args.rounds if args.compare else 1):
                                        for build, binary in builds:
                                            row.append((build, run_hookline(
                                                args, tmp, receiver_addr, durability, batching, n, c,
                                                baseline_rps[c], filt, store, nodes, sink, build, binary)))
                                    results.append(row)
    finally:
        receiver.kill()
        baseline.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(wasm_dir, ignore_errors=True)
    print()
    print("| build | sink | store | durability | batching | filter | events/req | conc. | accepted req/s "
          "| accepted events/s | delivered events/s | deliveries/s | vs baseline req/s | p50 / p99 latency "
          "| CPU per event | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in results:
        for _, r in row:
            print(r["line"])
    if args.compare:
        print()
        print(f"# medians over {args.rounds} interleaved rounds; ratio = this tree ÷ {args.compare}")
        print("| durability | batching | filter | events/req | conc. | accepted req/s (this / base) "
              "| vs bare hyper (this / base) | deliveries/s (this / base) | ratio req/s | ratio deliveries/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for row in results:
            this = [r for b, r in row if b == "this"]
            base = [r for b, r in row if b != "this"]
            med = lambda rs, k: statistics.median(r[k] for r in rs)
            ratio = lambda a, b: f"{a / b:.2f}×" if b else "-"
            first = this[0]
            print(f"| {first['durability']} | {first['batching']} | {first['filter']} | {first['events']} "
                  f"| {first['conc']} | {med(this, 'rps'):.0f} / {med(base, 'rps'):.0f} "
                  f"| {med(this, 'vs_base'):.0%} / {med(base, 'vs_base'):.0%} "
                  f"| {med(this, 'deliveries'):.0f} / {med(base, 'deliveries'):.0f} "
                  f"| {ratio(med(this, 'rps'), med(base, 'rps'))} "
                  f"| {ratio(med(this, 'deliveries'), med(base, 'deliveries'))} |")


def build_revision(rev):
    """Builds `hookline` at `rev` in a worktree of its own, into
    target/compare-REV (so neither build invalidates the other's cache);
    returns the binary's path."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    worktree = os.path.join(ROOT, "target", f"compare-{commit}", "src")
    if not os.path.isdir(worktree):
        subprocess.run(["git", "worktree", "add", "--detach", worktree, commit], cwd=ROOT, check=True)
    target_dir = os.path.join(ROOT, "target", f"compare-{commit}", "target")
    subprocess.run(["cargo", "build", "--release", "--bin", "hookline", "--target-dir", target_dir],
                   cwd=worktree, check=True)
    return os.path.join(target_dir, "release", "hookline")


def env_wrapper(binary, assignments):
    """A script that runs `binary` with the `NAME=VALUE` assignments added to
    its environment (it execs, so the daemon keeps the script's pid for the
    CPU and RSS readings); returns its path."""
    pairs = assignments.split()
    for pair in pairs:
        if "=" not in pair:
            sys.exit(f"--compare-env: {pair!r} is not NAME=VALUE")
    fd, path = tempfile.mkstemp(prefix="hookline-env-", suffix=".sh")
    with os.fdopen(fd, "w") as f:
        f.write("#!/bin/sh\nexec env " + " ".join(shlex.quote(p) for p in pairs) + " "
                + shlex.quote(binary) + ' "$@"\n')
    os.chmod(path, 0o755)
    return path


def start_redis(run_dir, durability):
    """A redis-server of the run's own on a unix socket; returns (proc, url)."""
    sock = os.path.join(run_dir, "redis.sock")
    fsync = ["--appendonly", "yes", "--appendfsync", "always"] if durability == "fsync" else ["--appendonly", "no"]
    proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
                             "--dir", run_dir, "--save", ""] + fsync,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not os.path.exists(sock):
        if time.time() > deadline:
            proc.kill()
            raise SystemExit("redis-server did not start")
        time.sleep(0.01)
    return proc, f"unix://{sock}"


def merged_metrics(addrs):
    delivered, deliveries, buckets = 0.0, 0.0, None
    for addr in addrs:
        d, n, b = metrics(addr)
        delivered += d
        deliveries += n
        buckets = b if buckets is None else [(le, x + y) for (le, x), (_, y) in zip(buckets, b)]
    return delivered, deliveries, buckets or []


def run_hookline(args, tmp, receiver_addr, durability, batching, n, c, base_rps, filt, store, nodes, sink,
                 build="this", binary=None):
    """One row: returns its figures, `line` the row as printed."""
    binary = binary or args.bin
    run_dir = tempfile.mkdtemp(dir=tmp)
    apps = os.path.join(run_dir, "apps")
    os.makedirs(apps)
    target, stop_peer = sink_peers.start(sink, run_dir, receiver_addr)
    webhook = dict(target, event_types=["member_added" if batching == "none" else "client_event"])
    if filt != "none":
        # The load's channels are private-room-N: the filter looks at every
        # event and keeps them all, so deliveries match the unfiltered runs.
        webhook["filters"] = [{"wasm": args.filter_wasm[filt], "config": {"channels": ["debug-*"]}}]
    with open(os.path.join(apps, "bench.json"), "w") as f:
        json.dump({"id": "bench", "key": "bench-key", "secret": "bench-secret",
                   "batching": {"enabled": batching == "on", "max_wait_ms": 50, "max_events": 100},
                   "webhooks": [webhook]}, f)
    env = dict(os.environ, HOOKLINE_INGEST_DURABILITY=durability, RUST_LOG="warn")
    redis = None
    if store == "redis":
        redis, url = start_redis(run_dir, durability)
        env.update(HOOKLINE_STORE_BACKEND="redis", HOOKLINE_STORE_REDIS_URL=url)
    procs, addrs = [], []
    try:
        for i in range(nodes):
            node_env = dict(env, HOOKLINE_STORE_NODE_ID=f"node-{i}")
            data_dir = os.path.join(run_dir, f"data-{i}")
            if filt != "none" or sink == "wasm":
                # A daemon restarts on its compile cache: compile once, in a
                # first start that is stopped at once, so RSS is not the
                # compiler's leftovers.
                warm, _ = start([binary, "serve", "--apps", apps, "--data-dir", data_dir,
                                 "--listen", "127.0.0.1:0"], env=node_env)
                warm.terminate()
                warm.wait()
            proc, addr = start([binary, "serve", "--apps", apps, "--data-dir", data_dir,
                                "--listen", "127.0.0.1:0"], env=node_env)
            procs.append(proc)
            addrs.append(addr)
        idle_rss = max(status_mib(p.pid, "VmRSS") for p in procs)
        body = body_of(n)
        path = signed_path('bench', 'bench-key', 'bench-secret', body.encode())
        delivered0, deliveries0, buckets0 = merged_metrics(addrs)
        pids = [p.pid for p in procs]
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        redis_cpu0 = cpu_seconds(redis.pid) if redis else 0.0
        start_time = time.time()
        if nodes == 1:
            rps, bad, errors = wrk(f"http://{addrs[0]}{path}", body, c, args.duration, tmp, args.delay_ms)
        else:
            # One wrk per node, the connections split between them.
            import concurrent.futures
            dirs = [os.path.join(tmp, f"wrk-{i}") for i in range(nodes)]
            for d in dirs:
                os.makedirs(d, exist_ok=True)
            with concurrent.futures.ThreadPoolExecutor(nodes) as pool:
                runs = list(pool.map(
                    lambda i: wrk(f"http://{addrs[i]}{path}", body, max(c // nodes, 1), args.duration, dirs[i],
                                  args.delay_ms),
                    range(nodes)))
            rps = sum(r[0] for r in runs)
            bad = sum(r[1] for r in runs)
        elapsed = time.time() - start_time
        cpu1 = sum(cpu_seconds(pid) for pid in pids)
        redis_cpu1 = cpu_seconds(redis.pid) if redis else 0.0
        delivered1, deliveries1, buckets1 = merged_metrics(addrs)
        p50 = quantile(buckets0, buckets1, 0.5)
        p99 = quantile(buckets0, buckets1, 0.99)
        peak = max(status_mib(pid, "VmHWM") for pid in pids)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # A large backlog can take longer to close out; the figures are in.
                proc.kill()
                proc.wait()
        if redis:
            redis.kill()
            redis.wait()
        stop_peer()
    fmt = lambda s: "-" if s is None else ("> 2 s" if s == float("inf") else f"≤{s * 1000:g} ms")
    note = f" ({bad} non-2xx)" if bad else ""
    events = max(rps * n * elapsed, 1)
    cpu_per_event = (cpu1 - cpu0) / events * 1e6
    redis_note = f" (+ redis {(redis_cpu1 - redis_cpu0) / events * 1e6:.1f})" if redis else ""
    label = store if store == "embedded" else f"redis ×{nodes}"
    deliveries = (deliveries1 - deliveries0) / elapsed
    line = (f"| {build} | {sink} | {label} | {durability} | {batching} | {filt} | {n} | {c} | {rps:.0f}{note} "
            f"| {rps * n:.0f} | {(delivered1 - delivered0) / elapsed:.0f} | {deliveries:.0f} | {rps / base_rps:.0%} "
            f"| {fmt(p50)} / {fmt(p99)} | {cpu_per_event:.1f} µs{redis_note} | {peak:.1f} MiB (idle {idle_rss:.1f}) |")
    print(line, flush=True)
    return {"line": line, "durability": durability, "batching": batching, "filter": filt, "events": n, "conc": c,
            "rps": rps, "vs_base": rps / base_rps, "deliveries": deliveries}


if __name__ == "__main__":
    main()
