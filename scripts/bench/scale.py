"""The scaling mode of load.py (`--scale`): how delivery grows with nodes.

One Redis (a redis-server of the run's own), the bare hyper receiver,
batching on, `--events` per request (10), `--apps` apps (12) driven evenly.
Each daemon runs in a cgroup-v1 `cpu` group of its own capped at
`--cpu-quota` percent of one CPU (30), so that three capped nodes on this
2-core machine measure scale-out rather than the machine. For each node
count in `--nodes` (1,3), `--repeat` times (3, the counts interleaved): the
daemons start, wrk drives every node with `--concurrency` connections per
node (32: each node's clients come with it; one node is saturated at 32),
each request to the next app in turn, for
`--warmup` seconds (the nodes settle: fair shares, then the work evened
out), then for `--duration` seconds, measured: accepted and delivered
events/s, each node's share of the deliveries and its CPU use. Prints a
Markdown table, and per node count the median delivered rate, how many
times one node's median it is, and the largest share any node had.

Needs root (it creates /sys/fs/cgroup/cpu/hookline-bench-N).
"""

import concurrent.futures
import json
import statistics
import os
import shutil
import subprocess
import tempfile
import time

CGROUP_ROOT = "/sys/fs/cgroup/cpu"
PERIOD_US = 100_000


def cgroup(name, percent):
    """A cgroup-v1 cpu group capped at `percent` of one CPU; its path."""
    path = os.path.join(CGROUP_ROOT, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
        f.write(str(PERIOD_US))
    with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as f:
        f.write(str(PERIOD_US * percent // 100))
    return path


def remove_cgroup(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


def throttled_seconds(path):
    """How long the group's processes were held back by the quota."""
    with open(os.path.join(path, "cpu.stat")) as f:
        for line in f:
            if line.startswith("throttled_time"):
                return int(line.split()[1]) / 1e9
    return 0.0


def machine_idle():
    """Seconds every CPU of the machine spent idle so far (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def wrk_rotating(url_base, paths, body, concurrency, duration, script_dir):
    """wrk POSTing `body` to each of `paths` in turn; (requests/s, non-2xx)."""
    script = os.path.join(script_dir, "rotate.lua")
    with open(script, "w") as f:
        f.write(f"local paths = {{{', '.join(json.dumps(p) for p in paths)}}}\n")
        f.write(f"local body = {json.dumps(body)}\n")
        f.write("local i = 0\n")
        f.write('local headers = {["Content-Type"] = "application/json"}\n')
        f.write("request = function()\n  i = i % #paths + 1\n"
                '  return wrk.format("POST", paths[i], headers, body)\nend\n')
    out = subprocess.run(
        ["wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{duration}s", "-s", script, url_base],
        check=True, capture_output=True, text=True,
    ).stdout
    import re
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, int(bad.group(1)) if bad else 0


def run(args, tools):
    """`tools`: load.py's helpers (start, start_redis, metrics, cpu_seconds,
    signed_path, body_of, ensure_wrk)."""
    if os.geteuid() != 0 or not os.path.isdir(CGROUP_ROOT):
        raise SystemExit(f"--scale needs root and a cgroup-v1 cpu hierarchy at {CGROUP_ROOT}")
    durability = args.durability.split(",")[0]
    events = int(args.events.split(",")[0])
    per_node = int(args.concurrency.split(",")[-1])
    node_counts = [int(n) for n in args.nodes.split(",")]
    body = tools.body_of(events)
    print(f"# scaling: {args.apps} apps, {events} events per request, batching on, durability {durability}, "
          f"each daemon capped at {args.cpu_quota} % of a CPU, wrk c={per_node} per node, "
          f"{args.warmup} s warm-up then {args.duration} s measured, {args.repeat} rounds", flush=True)
    tmp = tempfile.mkdtemp(prefix="hookline-scale-")
    receiver, receiver_addr = tools.start([args.baseline, "127.0.0.1:0"])
    results = []
    try:
        # Rounds interleave the node counts, so drift in the machine's
        # speed touches every count alike.
        for _ in range(args.repeat):
            for nodes in node_counts:
                results.append(run_nodes(args, tools, tmp, receiver_addr, durability, body, events,
                                         per_node * nodes, nodes))
    finally:
        receiver.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| nodes | accepted events/s | delivered events/s | share of deliveries by node "
          "| CPU by node (% of one) | throttled | Redis CPU | machine idle |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['nodes']} | {r['accepted']:.0f}{r['note']} | {r['rate']:.0f} | {r['shares']} "
              f"| {r['cpus']} | {r['held']} | {r['redis']} | {r['idle']} |")
    medians = {n: statistics.median(r["rate"] for r in results if r["nodes"] == n) for n in node_counts}
    print()
    for n in node_counts:
        ratio = f", {medians[n] / medians[1]:.2f}× one node" if 1 in medians and medians[1] else ""
        worst = max(r["top_share"] for r in results if r["nodes"] == n)
        print(f"{n} node(s): median {medians[n]:.0f} delivered events/s{ratio}; "
              f"the busiest node did at most {worst:.0%} of the deliveries")


def run_nodes(args, tools, tmp, receiver_addr, durability, body, events, concurrency, nodes):
    run_dir = tempfile.mkdtemp(dir=tmp)
    apps_dir = os.path.join(run_dir, "apps")
    os.makedirs(apps_dir)
    apps = [(f"bench-{i}", f"bench-key-{i}", f"bench-secret-{i}") for i in range(args.apps)]
    for app_id, key, secret in apps:
        with open(os.path.join(apps_dir, f"{app_id}.json"), "w") as f:
            json.dump({"id": app_id, "key": key, "secret": secret,
                       "batching": {"enabled": True, "max_wait_ms": 50, "max_events": 100},
                       "webhooks": [{"url": f"http://{receiver_addr}/hook", "event_types": ["client_event"]}]}, f)
    paths = [tools.signed_path(app_id, key, secret, body.encode()) for app_id, key, secret in apps]
    redis, url = tools.start_redis(run_dir, durability)
    env = dict(os.environ, HOOKLINE_INGEST_DURABILITY=durability, RUST_LOG="warn",
               HOOKLINE_STORE_BACKEND="redis", HOOKLINE_STORE_REDIS_URL=url)
    groups, procs, addrs = [], [], []
    try:
        for i in range(nodes):
            group = cgroup(f"hookline-bench-{i}", args.cpu_quota)
            groups.append(group)
            # Joins the group before exec, so every thread the daemon starts
            # is in it.
            cmd = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh",
                   args.bin, "serve", "--apps", apps_dir, "--data-dir", os.path.join(run_dir, f"data-{i}"),
                   "--listen", "127.0.0.1:0"]
            proc, addr = tools.start(cmd, env=dict(env, HOOKLINE_STORE_NODE_ID=f"node-{i}"))
            procs.append(proc)
            addrs.append(addr)

        def drive(seconds):
            dirs = [os.path.join(run_dir, f"wrk-{i}") for i in range(nodes)]
            for d in dirs:
                os.makedirs(d, exist_ok=True)
            with concurrent.futures.ThreadPoolExecutor(nodes) as pool:
                runs = list(pool.map(
                    lambda i: wrk_rotating(f"http://{addrs[i]}", paths, body, max(concurrency // nodes, 1), seconds,
                                           dirs[i]),
                    range(nodes)))
            return sum(r[0] for r in runs), sum(r[1] for r in runs)

        drive(args.warmup)
        delivered0 = [tools.metrics(a)[0] for a in addrs]
        cpu0 = [tools.cpu_seconds(p.pid) for p in procs]
        throttled0 = [throttled_seconds(g) for g in groups]
        redis0, idle0 = tools.cpu_seconds(redis.pid), machine_idle()
        began = time.time()
        rps, bad = drive(args.duration)
        elapsed = time.time() - began
        delivered = [tools.metrics(a)[0] - d for a, d in zip(addrs, delivered0)]
        cpu = [(tools.cpu_seconds(p.pid) - c) / elapsed for p, c in zip(procs, cpu0)]
        throttled = [(throttled_seconds(g) - t) / elapsed for g, t in zip(groups, throttled0)]
        redis_cpu = (tools.cpu_seconds(redis.pid) - redis0) / elapsed
        idle = (machine_idle() - idle0) / elapsed
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        redis.kill()
        redis.wait()
        for group in groups:
            remove_cgroup(group)
    total = sum(delivered)
    rate = total / elapsed
    shares = " / ".join(f"{d / total:.0%}" if total else "-" for d in delivered)
    cpus = " / ".join(f"{c:.0%}" for c in cpu)
    held = " / ".join(f"{t:.0%}" for t in throttled)
    print(f"{nodes} node(s): delivered {rate:.0f} events/s, shares {shares}, CPU {cpus}, "
          f"redis {redis_cpu:.0%}, machine idle {idle:.0%} of one CPU", flush=True)
    return {"nodes": nodes, "accepted": rps * events, "note": f" ({bad} non-2xx)" if bad else "", "rate": rate,
            "shares": shares, "cpus": cpus, "held": held, "redis": f"{redis_cpu:.0%}", "idle": f"{idle:.0%}",
            "top_share": max(delivered) / total if total else 0.0}
