#!/usr/bin/env python3
"""The load benchmark behind scripts/bench-load: one Envoy worker on loopback under wrk.

Each configuration is a template in bench/envoy/ (none, split, mirror, mirror-envoy, lua,
native-mirror) that serves two routes: /direct, answered by Envoy itself (direct_response: the
filter's pure cost), and /, proxied to one upstream. The no-filter Envoy runs throughout; every
round starts each other configuration's Envoy in turn (`--concurrency 1`) and, on each route,
runs wrk against the no-filter Envoy and then against it, and stops it; the order rotates from
round to round so no configuration always runs first. Figures are medians over rounds; a
configuration's CPU cost per request is 1/rps(config) - 1/rps(no filter) against the no-filter
run just before it (the machine's speed drifts over minutes); Envoy's own CPU time per request
(all its threads, from /proc/<pid>/task/*/schedstat) is reported beside it.

Run through scripts/bench-load, which sets ENVOY_BIN and DOPPEL_WASM. Standard library only.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "## Load: the filter in Envoy under wrk"
# (name in the table, template, filter config or None). Templates with a {{wasm_path}} get the
# doppel filter, except `bare`, which gets the baseline filter of bench/bare-filter/.
CONFIGS = [
    ("no filter", "none", None),
    ("doppel split 1%, sticky header", "split", "split.json"),
    ("doppel split 1%, random, on a 5.95% pool, Envoy strips control headers", "split-early", "split-early.json"),
    ("doppel mirror 1%", "mirror", "mirror.json"),
    ("doppel mirror 1%, sent by Envoy", "mirror-envoy", "mirror-envoy.json"),
    ("Lua (header, random, header)", "lua", None),
    ("bare Rust Wasm (header, header, histogram)", "bare", None),
    ("native request_mirror_policies 1%", "native-mirror", None),
]
ROUTES = [("direct_response", "/direct"), ("proxied", "/")]
# The native mirror is a router feature: a direct_response route never reaches the router.
SKIP = {("native-mirror", "direct_response")}


def say(message):
    print(f"bench-load: {message}", file=sys.stderr, flush=True)


def fail(message):
    say(message)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_until(what, check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


# CPUs by role when the run pins its processes (see `pin`): Envoy on one CPU, wrk and the
# upstream on the others, so that they do not take turns on Envoy's CPU. None: not pinned.
PINNING = None


def pin(no_pin):
    """Pins the run's processes when the machine has at least 2 CPUs and `taskset` (util-linux)."""
    global PINNING
    cpus = os.cpu_count() or 1
    if no_pin or cpus < 2 or not shutil.which("taskset"):
        return
    last = cpus - 1
    PINNING = {"envoy": str(last), "driver": "0" if last == 1 else f"0-{last - 1}"}


def pinned(cmd, role):
    """`cmd` on the CPUs of `role` ("envoy" or "driver": wrk and the upstream), if pinning."""
    if PINNING is None:
        return cmd
    return ["taskset", "-c", PINNING[role], *cmd]


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Upstream:
    """The one upstream every proxied run (and every mirror copy) goes to."""

    def __init__(self, kind, workdir):
        self.kind = kind
        self.proc = None
        self.workdir = workdir
        self.port = None

    def start(self):
        if self.kind == "demo":
            binary = os.environ.get("DOPPEL_UPSTREAM_BIN") or os.path.join(
                os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                "debug",
                "doppel-demo-upstream",
            )
            if not os.access(binary, os.X_OK):
                fail(f"no demo upstream at {binary}: cargo build -p doppel-demo-upstream, or set DOPPEL_UPSTREAM_BIN")
            self.name = f"doppel-demo-upstream --threads 1 ({binary})"
            self.description = f"`doppel-demo-upstream --threads 1` (`--upstream demo`, {binary})"
            self.proc = subprocess.Popen(
                pinned([binary, "--listen", "127.0.0.1:0", "--threads", "1"], "driver"),
                stdout=subprocess.PIPE,
                stderr=open(os.path.join(self.workdir, "upstream.log"), "w"),
                text=True,
            )
            line = self.proc.stdout.readline().strip()
            host, _, port = line.rpartition(":")
            if not port.isdigit():
                fail(f"demo upstream printed {line!r}, not its address")
            self.port = int(port)
        else:
            self.port = free_port()
            prefix = os.path.join(self.workdir, "nginx")
            os.makedirs(prefix, exist_ok=True)
            conf = os.path.join(prefix, "nginx.conf")
            with open(conf, "w") as f:
                f.write(
                    "daemon off; master_process off; worker_processes 1;\n"
                    f"pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;\n"
                    "events { worker_connections 4096; }\n"
                    "http { access_log off; keepalive_requests 1000000;\n"
                    f"  server {{ listen 127.0.0.1:{self.port}; location / {{ return 200 \"ok\\n\"; }} }} }}\n"
                )
            self.name = "nginx"
            self.description = (
                "Debian's nginx (`nginx-light`), one worker process answering `return 200`. nginx is"
                " the default because the demo upstream (`--upstream demo`, a debug build unless"
                " DOPPEL_UPSTREAM_BIN names a release one) serves fewer requests per second on its"
                " own than Envoy does on the direct_response route, and would hide the filter's cost"
            )
            self.proc = subprocess.Popen(pinned(["nginx", "-p", prefix, "-c", conf], "driver"), stderr=subprocess.DEVNULL)
        wait_until("the upstream", lambda: http_get(f"http://127.0.0.1:{self.port}/")[0] == 200)

    def stop(self):
        if self.proc:
            stop(self.proc)


class Envoy:
    def __init__(self, template, filter_config, upstream_port, workdir, envoy_bin, wasm):
        self.workdir = workdir
        name = os.path.basename(template)[: -len(".yaml")]
        self.config = os.path.join(workdir, f"{name}.yaml")
        args = [
            "admin_port=0",
            "listen_port=0",
            f"primary_port={upstream_port}",
            f"shadow_port={upstream_port}",
        ]
        if filter_config:
            args += [f"wasm_path={wasm}", f"filter_config=@{filter_config}"]
        elif name == "bare":
            # The baseline filter ignores its configuration (the template carries one for
            # scripts/validate-envoy).
            split = os.path.join(ROOT, "bench", "envoy", "filter", "split.json")
            args += [f"wasm_path={wasm}", f"filter_config=@{split}"]
        with open(self.config, "w") as out:
            subprocess.run([os.path.join(ROOT, "scripts", "render-envoy"), template, *args], stdout=out, check=True)
        self.admin_path = os.path.join(workdir, f"{name}.admin")
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.cmd = [
            envoy_bin, "-c", self.config, "--concurrency", "1", "--disable-hot-restart",
            "-l", "warn", "--admin-address-path", self.admin_path,
        ]

    def start(self):
        if os.path.exists(self.admin_path):
            os.remove(self.admin_path)
        self.proc = subprocess.Popen(pinned(self.cmd, "envoy"), stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"))
        try:
            wait_until("Envoy's admin address", lambda: os.path.getsize(self.admin_path) > 0)
            with open(self.admin_path) as f:
                self.admin = "http://" + f.read().strip()
            wait_until("Envoy to be ready", lambda: http_get(self.admin + "/ready")[0] == 200)
            _, body = http_get(self.admin + "/listeners?format=json")
            listeners = json.loads(body)["listener_statuses"]
            self.port = listeners[0]["local_address"]["socket_address"]["port_value"]
        except (RuntimeError, KeyError, IndexError, ValueError) as e:
            stop(self.proc)
            with open(self.log_path) as f:
                tail = f.read()[-2000:]
            fail(f"Envoy with {self.config} did not start ({e}); its log ends:\n{tail}")

    def counter(self, name):
        _, body = http_get(f"{self.admin}/stats?filter=^{re.escape(name)}$")
        for line in body.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def cpu_ns(self):
        """CPU time Envoy has used so far, all threads, in nanoseconds (schedstat's first field)."""
        total = 0
        task_dir = f"/proc/{self.proc.pid}/task"
        for task in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that ended between listdir and open
        return total

    def stop(self):
        stop(self.proc)


UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(output):
    """Requests/s, p50 and p99 (µs), requests and errors from `wrk --latency` output."""

    def latency(pct):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not m:
            raise ValueError(f"no {pct}% latency in wrk output:\n{output}")
        return float(m.group(1)) * UNITS[m.group(2)]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    if not rps or not total:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return {
        "rps": float(rps.group(1)),
        "p50": latency(50),
        "p99": latency(99),
        "requests": int(total.group(1)),
        "errors": errors,
    }


def wrk(url, seconds, connections):
    cmd = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url], "driver")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def run(envoy, label, route, path, args, r):
    """One wrk run on `route` of a started `envoy`: its figures, logged."""
    url = f"http://127.0.0.1:{envoy.port}{path}"
    if args.warmup > 0:
        wrk(url, args.warmup, args.connections)
    shadow_before = envoy.counter("cluster.shadow.upstream_rq_total")
    cpu_before = envoy.cpu_ns()
    result = parse_wrk(wrk(url, args.duration, args.connections))
    cpu = envoy.cpu_ns() - cpu_before
    time.sleep(0.2)  # let the last copies reach the shadow
    shadow = envoy.counter("cluster.shadow.upstream_rq_total") - shadow_before
    served = max(result["requests"], 1)
    result["shadow_share"] = shadow / served
    result["cpu_us"] = cpu / 1e3 / served
    say(
        f"round {r + 1}/{args.rounds} {label:<34} {route:<15} "
        f"{result['rps']:9.0f} req/s  p50 {result['p50']:7.0f} us  p99 {result['p99']:7.0f} us"
        f"  Envoy CPU {result['cpu_us']:.2f} us/rq"
        f"  to shadow {100 * result['shadow_share']:.2f}%  errors {result['errors']}"
    )
    return result


def measure(args, envoy_bin, wasm, split_wasm, bare_wasm):
    """Every configuration's runs, each with the no-filter run made just before it on the same
    route (`result["base"]`): the machine's speed drifts over minutes, so a configuration is
    compared with its neighbour, not with a run minutes away."""
    workdir = tempfile.mkdtemp(prefix="doppel-bench-")
    upstream = Upstream(args.upstream, workdir)
    # samples[(template, route)] = one dict per run; ("none", route) holds every baseline run
    samples = {}
    baseline = None
    try:
        upstream.start()
        say(f"upstream: {upstream.name} on port {upstream.port}")
        envoys = {}
        configs = [c for c in CONFIGS if c[1] in args.only]
        for _, template, filter_config in configs:
            envoys[template] = Envoy(
                os.path.join(ROOT, "bench", "envoy", f"{template}.yaml"),
                filter_config and os.path.join(ROOT, "bench", "envoy", "filter", filter_config),
                upstream.port,
                workdir,
                envoy_bin,
                # Configs whose filter sends no copies get the split-only build, as the engine
                # pushes it.
                {"bare": bare_wasm, "split": split_wasm, "split-early": split_wasm, "mirror-envoy": split_wasm}.get(template, wasm),
            )
        # The no-filter Envoy runs throughout (idle between its runs) for the paired baselines.
        baseline = envoys["none"]
        baseline.start()
        others = [c for c in configs if c[1] != "none"]
        for r in range(args.rounds):
            order = others[r % len(others):] + others[: r % len(others)]
            for label, template, _ in order:
                envoy = envoys[template]
                envoy.start()
                try:
                    for route, path in ROUTES:
                        if (template, route) in SKIP or route not in args.routes:
                            continue
                        base = run(baseline, "no filter", route, path, args, r)
                        samples.setdefault(("none", route), []).append(base)
                        result = run(envoy, label, route, path, args, r)
                        result["base"] = base
                        samples.setdefault((template, route), []).append(result)
                finally:
                    envoy.stop()
    finally:
        if baseline is not None:
            baseline.stop()
        upstream.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return samples, upstream.description


def fmt_us(x):
    return f"{x:.0f} µs" if x >= 10 else f"{x:.1f} µs"


def table(samples):
    lines = [
        "| route | configuration | req/s | p50 | p99 | CPU per request over no filter | Envoy CPU per request | Envoy CPU over no filter | req/s vs no filter | cost vs Lua | sent to shadow | errors (all rounds) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for route, _ in ROUTES:
        base = samples.get(("none", route))
        if not base:
            continue
        costs = {}
        for _, template, _ in CONFIGS:
            runs = samples.get((template, route))
            if not runs or template == "none":
                continue
            # Cost per run against the no-filter run just before it, then the median.
            costs[template] = statistics.median(1e6 / s["rps"] - 1e6 / s["base"]["rps"] for s in runs)
        for label, template, _ in CONFIGS:
            runs = samples.get((template, route))
            if not runs:
                if (template, route) in SKIP:
                    lines.append(f"| {route} | {label} | n/a | | | | | | | | | |")
                continue
            rps = statistics.median(s["rps"] for s in runs)
            cpu = statistics.median(s["cpu_us"] for s in runs)
            if template == "none":
                ratio = 1.0
                cost_cell, cpu_cost_cell, vs_lua = "—", "—", "—"
            else:
                ratio = statistics.median(s["rps"] / s["base"]["rps"] for s in runs)
                cost = costs[template]
                cost_cell = f"{cost:+.2f} µs"
                cpu_cost = statistics.median(s["cpu_us"] - s["base"]["cpu_us"] for s in runs)
                cpu_cost_cell = f"{cpu_cost:+.2f} µs"
                lua_cost = costs.get("lua")
                # A cost at or below zero is noise: no ratio.
                positive = lua_cost and lua_cost > 0 and cost > 0
                vs_lua = f"{cost / lua_cost:.2f}x" if positive else "—"
            lines.append(
                f"| {route} | {label} | {rps:,.0f} | {fmt_us(statistics.median(s['p50'] for s in runs))} "
                f"| {fmt_us(statistics.median(s['p99'] for s in runs))} | {cost_cell} | {cpu:.2f} µs | {cpu_cost_cell} "
                f"| {ratio:.3f} | {vs_lua} "
                f"| {100 * statistics.median(s['shadow_share'] for s in runs):.2f}% "
                f"| {sum(s['errors'] for s in runs)} |"
            )
    return "\n".join(lines)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def section(args, samples, upstream, envoy_bin, command):
    short = args.duration < 10 or args.rounds < 3
    version = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True).stdout
    version = re.search(r"/(\d+\.\d+\.\d+)/", version)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    wrk_version = re.search(r"(\d+\.\d+\.\d+)", wrk_version)
    rounds = f"{args.rounds} round" + ("s" if args.rounds > 1 else "")
    out = [SECTION, ""]
    if short:
        out += [
            f"**Short run ({args.duration} s x {rounds}): it shows that the script works; its",
            "figures are noise. Rerun with the defaults (10 s x 3 rounds) on a quiet machine.**",
            "",
        ]
    out += [
        "```sh",
        command,
        "```",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on "
        f"{os.cpu_count()} CPUs ({cpu_model()}, load average {args.load_before:.1f} at the start); "
        f"Envoy {version.group(1) if version else '?'}, wrk {wrk_version.group(1) if wrk_version else '?'}; "
        f"{args.duration} s per run after a {args.warmup} s warm-up, {rounds}, "
        f"wrk with 1 thread and {args.connections} connections; "
        + (
            f"Envoy pinned to CPU {PINNING['envoy']}, wrk and the upstream to CPU {PINNING['driver']} (`taskset`)."
            if PINNING
            else "not pinned to CPUs."
        ),
        "",
        table(samples),
        "",
        "How to read it:",
        "",
        *(
            [
                "- One Envoy worker (`--concurrency 1`) on 127.0.0.1. Envoy runs on a CPU of its own, all",
                "  its threads (V8's background threads too), and wrk and the upstream on the others",
                "  (`taskset`; `--no-pin` lets them share every CPU), so that they do not take turns on",
                "  Envoy's. Each configuration is a template in `bench/envoy/` (the doppel filter's configs",
            ]
            if PINNING
            else [
                "- One Envoy worker (`--concurrency 1`) on 127.0.0.1; wrk, Envoy and the upstream share",
                "  every CPU (`--no-pin`). Each configuration is a template in `bench/envoy/` (the doppel filter's configs",
            ]
        ),
        "  are in `bench/envoy/filter/`); every round starts each one in turn, in an order that",
        "  rotates from round to round, and on each route runs wrk against the no-filter Envoy (which",
        "  runs throughout) and then against it. Figures are medians over rounds; the no-filter row's",
        "  are over all its runs.",
        "- **direct_response**: `/direct`, answered by Envoy itself, so the difference from no filter",
        "  is the filter's own cost. **proxied**: `/`, sent to the upstream; every Envoy's `primary`",
        "  and `shadow` clusters point at that one upstream.",
        f"- **The upstream**: {upstream}.",
        "- **CPU per request over no filter** is 1/rps(config) - 1/rps(no filter), each run against",
        "  the no-filter run just before it, then the median: with the worker saturated, the extra time per",
        "  request the configuration costs. **Envoy CPU per request** is the CPU time Envoy's threads",
        "  used during the run (`/proc/<pid>/task/*/schedstat`) per request served, and **Envoy CPU over",
        "  no filter** its difference from that no-filter run: the same cost measured on",
        "  Envoy alone, without wrk's and the upstream's share of the machine. **req/s vs no filter** is",
        "  the throughput ratio (median over rounds); **cost vs Lua** divides the configuration's cost",
        "  by the Lua filter's on the same route.",
        "- **bare Rust Wasm** is `bench/bare-filter/`: a filter built with the proxy-wasm Rust SDK that",
        "  reads one header, writes one and records one histogram per request, the least a Rust Wasm",
        "  filter does; doppel speaks the ABI itself and measures only a sample of primary requests",
        "  (`docs/filter-config.md`). doppel split keyed by `x-user-id` (sticky header) reads every",
        "  request's headers (the key, and spoofed control headers to strip); doppel split at random",
        "  (`bench/envoy/split-early.yaml`) is what the engine serves over full ADS for a policy without",
        "  a sticky key: the connection manager removes the control headers first (`strip_control:",
        "  envoy`) and a route runs the filter only on a pool of requests drawn at random (5.95%: the",
        "  1% it chooses and the primary's 5% sample of the rest, `pool_percent`); the filter reads",
        "  only a chosen request's headers.",
        "  doppel split and doppel mirror sent by Envoy run the split-only",
        "  build (doppel_filter_split.wasm, as the engine pushes them), doppel mirror the full one",
        "  (the filter sends the copies and compares the answers; sent by Envoy, the router copies",
        "  the requests the filter marked: `bench/envoy/mirror-envoy.yaml`). `scripts/bench-instructions` prices",
        "  the same configurations in",
        "  instructions per request, which do not depend on the machine's other load.",
        "- **sent to shadow**: requests the `shadow` cluster received (`cluster.shadow.upstream_rq_total`)",
        "  per request served, which checks that each configuration chose about 1%.",
        "  The Lua filter and doppel split route their 1% to the shadow cluster when proxying (on",
        "  the direct_response route nothing is routed, hence 0%); the mirrors copy 1% of",
        "  requests there on top of serving them. The native mirror is a router feature, so it has",
        "  no direct_response row (that route never reaches the router), and doppel's mirror sent",
        "  by Envoy copies nothing there (0%): its direct_response row is the filter's marking alone.",
        "- The figures are ratios from one run on a shared machine: compare rows with each other, not",
        "  with figures from another run or another machine.",
    ]
    return "\n".join(out) + "\n"


def write_section(text, title=SECTION):
    """Replaces the section headed `title` in BENCHMARKS.md with `text` (or appends it)."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        doc = f.read()
    start = doc.find(title + "\n")
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        nxt = re.compile(r"^## ", re.M).search(doc, start + len(title))
        end = nxt.start() if nxt else len(doc)
        doc = doc[:start] + text + ("\n" + doc[end:] if nxt else "")
    with open(path, "w") as f:
        f.write(doc)
    return path


def ensure_tools(args):
    missing = []
    if not shutil.which("wrk"):
        missing.append("wrk")
    if args.upstream == "nginx" and not shutil.which("nginx"):
        missing.append("nginx-light")
    if missing:
        subprocess.run([os.path.join(ROOT, "scripts", "setup"), *missing], check=True)


def exit_on_sigterm():
    """Makes SIGTERM (kill, timeout) unwind like an exception, so every `finally` stops the
    Envoys and the upstream this run started instead of leaving them running."""
    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def main(argv):
    parser = argparse.ArgumentParser(prog="scripts/bench-load", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all configurations (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of wrk before each run, not measured (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--upstream", choices=["nginx", "demo"], default="nginx",
        help="the proxied routes' upstream: Debian's nginx (default) or doppel-demo-upstream (DOPPEL_UPSTREAM_BIN)",
    )
    parser.add_argument(
        "--only", default=",".join(c[1] for c in CONFIGS),
        help="comma-separated templates to run (no filter always runs; default: all of "
        + ", ".join(c[1] for c in CONFIGS) + ")",
    )
    parser.add_argument(
        "--routes", default=",".join(r[0] for r in ROUTES),
        help="comma-separated routes to run (default: " + ", ".join(r[0] for r in ROUTES) + ")",
    )
    parser.add_argument(
        "--no-pin", action="store_true",
        help="do not pin Envoy to one CPU and wrk and the upstream to the others (taskset)",
    )
    parser.add_argument("--write", action="store_true", help=f"replace the '{SECTION[3:]}' section of BENCHMARKS.md")
    args = parser.parse_args(argv[1:])
    pin(args.no_pin)
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--duration, --rounds and --connections must be at least 1, --warmup at least 0")
    known = {c[1] for c in CONFIGS}
    args.only = set(filter(None, args.only.split(","))) | {"none"}
    args.routes = set(filter(None, args.routes.split(",")))
    if args.only - known:
        parser.error(f"--only: unknown template {', '.join(sorted(args.only - known))} (known: {', '.join(sorted(known))})")
    if not args.routes or args.routes - {r[0] for r in ROUTES}:
        parser.error(f"--routes: expected some of {', '.join(r[0] for r in ROUTES)}, got {','.join(sorted(args.routes))!r}")
    if args.write and (len(args.only) < len(CONFIGS) or len(args.routes) < len(ROUTES)):
        parser.error("--write needs every configuration and route (no --only or --routes)")
    envoy_bin = os.environ.get("ENVOY_BIN", "")
    wasm = os.environ.get("DOPPEL_WASM", "")
    split_wasm = os.environ.get("DOPPEL_SPLIT_WASM", "")
    bare_wasm = os.environ.get("DOPPEL_BARE_WASM", "")
    if not os.access(envoy_bin, os.X_OK):
        fail(f"no Envoy at {envoy_bin!r}: run scripts/setup (or set ENVOY_BIN)")
    for path, var in ((wasm, "DOPPEL_WASM"), (split_wasm, "DOPPEL_SPLIT_WASM")):
        if not os.path.isfile(path):
            fail(f"no filter at {path!r}: build it (scripts/bench-load does unless DOPPEL_SKIP_FILTER_BUILD=1) or set {var}")
    if "bare" in args.only and not os.path.isfile(bare_wasm):
        fail(f"no baseline filter at {bare_wasm!r}: scripts/bench-load builds bench/bare-filter (or set DOPPEL_BARE_WASM)")
    ensure_tools(args)
    args.load_before = os.getloadavg()[0]
    samples, upstream = measure(args, envoy_bin, wasm, split_wasm, bare_wasm)
    command = "scripts/bench-load " + " ".join(shlex.quote(a) for a in argv[1:])
    text = section(args, samples, upstream, envoy_bin, command.strip())
    sys.stdout.write(text)
    if args.write:
        say(f"wrote the section to {write_section(text)}")


if __name__ == "__main__":
    exit_on_sigterm()
    main(sys.argv)
