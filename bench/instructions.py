#!/usr/bin/env python3
"""The instruction benchmark behind scripts/bench-instructions: Envoy under valgrind's callgrind.

Counts the machine instructions one Envoy worker executes per request, for each configuration of
the load benchmark (bench/envoy/*.yaml) and for probe filters that each make one kind of call
between Envoy and a Wasm VM (bench/probe-filter/). Instruction counts do not depend on what else
the machine runs, so unlike requests per second they can be compared across runs on a shared
machine; they are not time (a cache miss costs more than an add), so the load benchmark's
figures stay the reference for time.

Each run: Envoy starts under `valgrind --tool=callgrind --instr-atstart=no`, gets WARMUP requests,
then counting is switched on for REQUESTS sequential keep-alive requests to /direct (answered by
Envoy itself) or / (proxied to nginx) with an `x-user-id` header, and off again. Instructions per request are the total
divided by REQUESTS; everything Envoy does in that time counts (its main thread included).

Run through scripts/bench-instructions, which sets ENVOY_BIN, DOPPEL_WASM, DOPPEL_BARE_WASM and
DOPPEL_PROBE_DIR. Standard library only.
"""
import argparse
import datetime
import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import load  # noqa: E402 (bench/ is on sys.path when run as a script)

SECTION = "## Instructions per request: Envoy under callgrind"
# (label, template, doppel filter config or None, wasm: None | "doppel" | "split" | "bare"), on
# /direct. Split and off get the split-only build, as the engine pushes them.
POOL = "on a 5.95% pool, Envoy strips control headers"
# The same with the primary's sample at ten times the shadow's share instead of five: a copy of
# split-early's template and config made in the run's directory.
POOL_TEN = "on a 10.9% pool (primary sample 10%), Envoy strips control headers"
EVERY = "on every request, Envoy strips control headers"
# A template's copy without its `inline_headers` (made in the run's directory).
NOT_INLINE = "not registered inline"
CONFIGS = [
    ("no filter", "none", None, None),
    ("Lua (header, random, header)", "lua", None, None),
    ("bare Rust Wasm, proxy-wasm SDK (header, header, histogram)", "bare", None, "bare"),
    ("doppel split 1%, sticky header", "split", "split.json", "split"),
    (f"doppel split 1%, random, {POOL}", "split-early", "split-early.json", "split"),
    (f"doppel split 1%, random, {EVERY}", "split-strip", "split-strip.json", "split"),
    ("Envoy strips control headers, no filter", "strip", None, None),
    (f"Envoy strips control headers, {NOT_INLINE}, no filter", "strip", None, None),
    ("doppel mirror 1%", "mirror", "mirror.json", "doppel"),
    ("doppel off", "split", "off.json", "split"),
]
ROUTES_ALONE = "doppel's routes alone at 1%, no filter"
IDLE_MIRROR = "a mirror policy on the route, copying none, no filter"
# The same kinds of configuration proxied to nginx ("/"): what a filter costs a proxied request.
# (label, template, doppel filter config or None, wasm as in CONFIGS or "probe:NAME").
PROXIED = [
    ("proxied, no filter", "none", None, None),
    ("proxied, probe: Wasm filter, no request callback", "bare", None, "probe:none"),
    ("proxied, probe: one callback into the VM", "bare", None, "probe:callback"),
    ("proxied, Lua (header, random, header)", "lua", None, None),
    ("proxied, doppel split 1%, sticky header", "split", "split.json", "split"),
    (f"proxied, doppel split 1%, random, {POOL}", "split-early", "split-early.json", "split"),
    (f"proxied, doppel split 1%, random, {POOL_TEN}", "split-early", "split-early.json", "split"),
    (f"proxied, doppel split 1%, random, {EVERY}", "split-strip", "split-strip.json", "split"),
    (f"proxied, {ROUTES_ALONE}", "routes", None, None),
    (f"proxied, {IDLE_MIRROR}", "idle-mirror", None, None),
]
# Every request mirrored, or none, proxied to nginx: the cost of one mirrored request, doppel's
# and Envoy's own. (label, template, doppel filter config or None, wasm as in CONFIGS, percent of
# requests copied); these variants of the templates are made in the run's directory, with the
# primary sampled at 5% (what a 1% mirror measures). A copy Envoy sends (mirror.sender: envoy)
# needs no callout from the filter, so the split-only build carries it, as the engine pushes it.
MIRRORED = [
    ("proxied, native request_mirror_policies 100%", "native-mirror", None, None, 100),
    ("proxied, doppel mirror sent by the filter, copying none", "mirror", "mirror.json", "doppel", 0),
    ("proxied, doppel mirror sent by the filter, 100%", "mirror", "mirror.json", "doppel", 100),
    ("proxied, doppel mirror sent by Envoy, copying none", "mirror-envoy", "mirror-envoy.json", "split", 0),
    ("proxied, doppel mirror sent by Envoy, 100%", "mirror-envoy", "mirror-envoy.json", "split", 100),
]
PROBES = [
    ("probe: Wasm filter, no request callback", "none"),
    ("probe: one callback into the VM", "callback"),
    ("probe: + read the clock", "clock"),
    ("probe: + read an absent header", "absent"),
    ("probe: + read a present header", "present"),
    ("probe: + read all headers in one call", "pairs"),
    ("probe: + remove three absent headers", "remove"),
]


def say(message):
    print(f"bench-instructions: {message}", file=sys.stderr, flush=True)


def render(template, workdir, name, wasm, filter_config, ports, upstream=9):
    args = [
        f"admin_port={ports[0]}",
        f"listen_port={ports[1]}",
        f"primary_port={upstream}",
        f"shadow_port={upstream}",
    ]
    if wasm:
        # The bare and probe filters ignore their configuration (their template carries one
        # for scripts/validate-envoy).
        config = filter_config or os.path.join(load.ROOT, "bench", "envoy", "filter", "split.json")
        args += [f"wasm_path={wasm}", f"filter_config=@{config}"]
    path = os.path.join(workdir, f"{name}.yaml")
    with open(path, "w") as out:
        subprocess.run(
            [os.path.join(load.ROOT, "scripts", "render-envoy"), template, *args], stdout=out, check=True
        )
    return path


def drive(port, n, path="/direct"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for i in range(n):
            conn.request("GET", path, headers={"x-user-id": f"user-{i}"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"request {i} answered {response.status}")
    finally:
        conn.close()


def totals(path):
    """The instructions counted in a callgrind dump (its `totals:` line, written last)."""
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def mirroring(workdir, template, filter_config, percent):
    """Copies of a template and a doppel config that mirror `percent` of requests."""
    with open(os.path.join(load.ROOT, "bench", "envoy", f"{template}.yaml")) as f:
        text = f.read()
    if template == "native-mirror":
        text = text.replace("numerator: 1, denominator: HUNDRED", f"numerator: {percent}, denominator: HUNDRED")
    out = os.path.join(workdir, f"{template}-{percent}.yaml")
    with open(out, "w") as f:
        f.write(text)
    if filter_config:
        with open(os.path.join(load.ROOT, "bench", "envoy", "filter", filter_config)) as f:
            config = json.load(f)
        config["percent"] = float(percent)
        config["primary_sample_percent"] = 5.0
        filter_config = os.path.join(workdir, f"{percent}-{filter_config}")
        with open(filter_config, "w") as f:
            json.dump(config, f)
    return out, filter_config


def without_inline(workdir, template):
    """A copy of `template` without its bootstrap's `inline_headers` block."""
    with open(template) as f:
        text = f.read()
    copy = re.sub(r"^inline_headers:\n(?:- .*\n)+\n?", "", text, flags=re.M)
    if copy == text:
        raise RuntimeError(f"{template} registers no inline headers")
    out = os.path.join(workdir, "not-inline-" + os.path.basename(template))
    with open(out, "w") as f:
        f.write(copy)
    return out


def ten_times(workdir, template, filter_config):
    """Copies of the pool template and its config with the primary sampled at 10% (1% split)."""
    with open(template) as f:
        text = f.read()
    copy = text.replace("numerator: 59500,", "numerator: 109000,")
    if copy == text:
        raise RuntimeError(f"{template} has no 5.95% pool")
    out = os.path.join(workdir, "pool-ten-" + os.path.basename(template))
    with open(out, "w") as f:
        f.write(copy)
    with open(filter_config) as f:
        config = json.load(f)
    config["primary_sample_percent"] = 10.0
    config["pool_percent"] = 10.9
    config_out = os.path.join(workdir, "pool-ten-" + os.path.basename(filter_config))
    with open(config_out, "w") as f:
        json.dump(config, f)
    return out, config_out


def measure(args, envoy_bin):
    workdir = tempfile.mkdtemp(prefix="doppel-instructions-")
    rows = []
    wasm = {
        None: None,
        "doppel": os.environ["DOPPEL_WASM"],
        "split": os.environ["DOPPEL_SPLIT_WASM"],
        "bare": os.environ["DOPPEL_BARE_WASM"],
    }
    for probe in ("none", "callback", *(probe for _, probe in PROBES)):
        wasm[f"probe:{probe}"] = os.path.join(os.environ["DOPPEL_PROBE_DIR"], f"{probe}.wasm")
    filters = os.path.join(load.ROOT, "bench", "envoy", "filter")
    upstream = load.Upstream("nginx", workdir)
    try:
        upstream.start()
        # (label, template path, filter config path, wasm path, upstream port, path)
        runs = []
        for label, template, filter_config, kind in CONFIGS:
            template = os.path.join(load.ROOT, "bench", "envoy", f"{template}.yaml")
            if NOT_INLINE in label:
                template = without_inline(workdir, template)
            runs.append((label, template, filter_config and os.path.join(filters, filter_config), wasm[kind], 9, "/direct"))
        for label, probe in PROBES:
            template = os.path.join(load.ROOT, "bench", "envoy", "bare.yaml")
            runs.append((label, template, None, wasm[f"probe:{probe}"], 9, "/direct"))
        for label, template, filter_config, kind in PROXIED:
            template = os.path.join(load.ROOT, "bench", "envoy", f"{template}.yaml")
            filter_config = filter_config and os.path.join(filters, filter_config)
            if POOL_TEN in label:
                template, filter_config = ten_times(workdir, template, filter_config)
            runs.append((label, template, filter_config, wasm[kind], upstream.port, "/"))
        for label, template, filter_config, kind, percent in MIRRORED:
            template, filter_config = mirroring(workdir, template, filter_config, percent)
            runs.append((label, template, filter_config, wasm[kind], upstream.port, "/"))
        if args.only:
            runs = [r for r in runs if any(o in r[0] for o in args.only)]
        for label, template, filter_config, wasm_path, upstream_port, path in runs:
            name = re.sub(r"\W+", "_", label).strip("_")[:48]
            ports = (load.free_port(), load.free_port())
            config = render(template, workdir, name, wasm_path, filter_config, ports, upstream_port)
            started = time.monotonic()
            per_request = count(args, envoy_bin, config, workdir, name, ports, path)
            rows.append((label, per_request))
            say(f"{label:<60} {per_request:10,.0f} instructions/request ({time.monotonic() - started:.0f} s)")
    finally:
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def count(args, envoy_bin, config, workdir, name, ports, path):
    """Instructions per request of Envoy with `config` (listening on `ports[1]`) for `path`."""
    out = os.path.join(workdir, f"{name}.callgrind")
    log_path = os.path.join(workdir, f"{name}.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                "valgrind", "--tool=callgrind", "--instr-atstart=no", "--smc-check=all-non-file",
                f"--callgrind-out-file={out}",
                envoy_bin, "-c", config, "--concurrency", "1", "--disable-hot-restart", "-l", "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{ports[1]}{path}"
            load.wait_until(f"Envoy under callgrind ({name})", lambda: load.http_get(url, timeout=10)[0] == 200, timeout=300)
            drive(ports[1], args.warmup, path)

            def control(*a):
                subprocess.run(["callgrind_control", *a, str(proc.pid)], capture_output=True, check=True)

            control("-i", "on")
            drive(ports[1], args.requests, path)
            control("-i", "off")
            control("-d")
            dump = f"{out}.1"
            load.wait_until("callgrind's dump", lambda: os.path.exists(dump) and totals_or_none(dump) is not None, timeout=60)
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
                shutil.copy(dump, os.path.join(args.keep, f"{name}.callgrind"))
            return totals(dump) / args.requests
        except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
            log.flush()
            with open(log_path) as f:
                tail = f.read()[-2000:]
            load.fail(f"{name} ({config}): {e}; its log ends:\n{tail}")
        finally:
            load.stop(proc)
    return 0.0


def totals_or_none(path):
    try:
        return totals(path)
    except (RuntimeError, OSError, ValueError, IndexError):
        return None


def table(rows):
    by_label = dict(rows)
    base = by_label["no filter"]
    lua = by_label["Lua (header, random, header)"] - base
    bare = by_label["bare Rust Wasm, proxy-wasm SDK (header, header, histogram)"] - base
    lines = [
        "| on `/direct` (answered by Envoy) | instructions per request | over no filter | vs Lua | vs bare Rust Wasm |",
        "|---|---|---|---|---|",
    ]
    elsewhere = {label for label, *_ in PROXIED + MIRRORED}
    for label, per_request in rows:
        if label in elsewhere:
            continue
        over = per_request - base
        if label == "no filter":
            lines.append(f"| {label} | {per_request:,.0f} | — | — | — |")
            continue
        lines.append(f"| {label} | {per_request:,.0f} | {over:+,.0f} | {over / lua:.2f}x | {over / bare:.2f}x |")
    proxied = by_label["proxied, no filter"]
    lines += [
        "",
        "| proxied to nginx | instructions per request | over no filter | throughput kept |",
        "|---|---|---|---|",
    ]
    for label, *_ in PROXIED:
        per_request = by_label[label]
        if label == "proxied, no filter":
            lines.append(f"| {label} | {per_request:,.0f} | — | 1.000 |")
            continue
        lines.append(f"| {label} | {per_request:,.0f} | {per_request - proxied:+,.0f} | {proxied / per_request:.3f} |")
    native = by_label["proxied, native request_mirror_policies 100%"] - proxied
    lines += [
        "",
        "| every request mirrored or none, proxied to nginx | instructions per request | over no filter | vs native mirroring | over the same filter copying none | vs native mirroring |",
        "|---|---|---|---|---|---|",
    ]
    for label, template, filter_config, kind, percent in MIRRORED:
        per_request = by_label[label]
        over = per_request - proxied
        if percent == 0:
            lines.append(f"| {label} | {per_request:,.0f} | {over:+,.0f} | | | |")
            continue
        none = next((l for l, t, _, _, p in MIRRORED if t == template and p == 0), None)
        marginal = per_request - by_label[none] if none else over
        lines.append(
            f"| {label} | {per_request:,.0f} | {over:+,.0f} | {over / native:.2f}x | {marginal:+,.0f} | {marginal / native:.2f}x |"
        )
    return "\n".join(lines)


def section(args, rows, envoy_bin, command):
    version = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True).stdout
    version = re.search(r"/(\d+\.\d+\.\d+)/", version)
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    return "\n".join([
        SECTION,
        "",
        "```sh",
        command,
        "```",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
        f"Envoy {version.group(1) if version else '?'} (V8), {valgrind}; {args.requests:,} requests "
        f"per configuration after {args.warmup} unmeasured ones.",
        "",
        table(rows),
        "",
        "How to read it:",
        "",
        "- Instructions Envoy executed per request (all its threads, the Wasm VM's generated code",
        "  included), counted by callgrind while sequential keep-alive requests hit `/direct`",
        "  (answered by Envoy itself) or `/` (proxied to nginx) with an `x-user-id` header.",
        "  Counts are exact and do not depend on other load on the machine; they are not time,",
        "  so the load benchmark above stays the reference for time.",
        "- **vs Lua** and **vs bare Rust Wasm** divide the cost over no filter by that filter's. The",
        "  bare filter is built with the proxy-wasm Rust SDK (`bench/bare-filter/`); doppel speaks",
        "  the ABI itself (`filter/src/glue/`).",
        "- **doppel split** and **doppel off** run the split-only build (doppel_filter_split.wasm,",
        "  what the engine pushes while the filter splits or is off: no body callbacks), **doppel",
        "  mirror** the full build (doppel_filter.wasm).",
        *split_kinds(rows),
        "- The probes (`bench/probe-filter/`) price the calls a filter cannot avoid: being a Wasm",
        "  filter at all, one callback into the VM (Envoy calls each exported callback for every",
        "  request: four for doppel's split-only build, five for its full build on a response with",
        "  a body, seven for the SDK), and reading from Envoy. A header value costs far more present",
        "  than absent: Envoy calls back into the VM to allocate memory for it. Reading all headers",
        "  in one call costs less than one present value. So an unchosen doppel request costs about",
        "  the no-callback floor and its callbacks, plus one all-headers read when the filter strips",
        "  or decides on a header; only the sampled primary requests and the chosen ones pay for the",
        "  clock, the status and a histogram. Removing three headers blindly (the `remove` probe:",
        "  what a filter that reads no header would still need to strip spoofed control headers)",
        "  costs nearly as much as that one read.",
        "- `--keep DIR` keeps each run's callgrind dump: the Wasm code Envoy's V8 generated shows",
        "  there as unnamed code at high addresses (the filter's own work: about 2,100 instructions",
        "  per request of doppel split, the rest is Envoy's and V8's side of the calls).",
        "- Before the filter spoke the ABI itself and sampled the primary (commit 8effa76: the",
        "  proxy-wasm SDK, every request measured), the same measurement gave doppel split 1%",
        "  +54,169 instructions over no filter (2.97x Lua, 1.34x the bare filter).",
        "- **proxied to nginx**: the same kinds of configuration on `/`, proxied to one nginx",
        "  worker (`return 200`); **throughput kept** is no filter's count over the",
        "  configuration's: the share of no-filter throughput it keeps with Envoy's worker",
        "  saturated. A filter costs a proxied request more than one answered by Envoy (the",
        "  upstream's response has more headers to hand over, the route more to do).",
        *throughput_floor(rows),
        "- **A mirrored request's cost**: every request mirrored on the proxied route (doppel at",
        "  100%, the native `request_mirror_policies` at 100%), minus the same route without a",
        "  filter (**over no filter**) or minus the same filter and route copying nothing (**over",
        "  the same filter copying none**: the cost of the mirroring itself, without the filter's",
        "  cost of being there for every request, which the split rows above price). Each sends",
        "  one copy per request to the same nginx; the doppel configs keep the primary sample a",
        "  1% mirror has (5%). **Sent by the filter** (`mirror.sender: filter`, the default; the",
        "  full build): the copy is an HTTP callout dispatched from the root context on its tick,",
        "  and the filter compares the two answers (status, latency), which native mirroring does",
        "  not do: its answer comes back into the VM. **Sent by Envoy** (`mirror.sender: envoy`;",
        "  the split-only build, `bench/envoy/mirror-envoy.yaml`): the filter names the shadow's",
        "  cluster in `x-doppel-mirror-to` on the chosen request and Envoy's router copies it",
        "  (`cluster_header`, on a route only the marked requests take: a mirror policy costs",
        f"  Envoy {idle_mirror(rows):+,.0f} instructions on every request of its route even when it",
        "  copies nothing, the row above): no comparison in the filter, the shadow is judged on",
        "  its cluster's stats.",
    ]) + "\n"


def split_kinds(rows):
    """Prose: the doppel split configurations, and what Envoy's stripping costs."""
    by_label = dict(rows)
    base = by_label["no filter"]
    lua = by_label["Lua (header, random, header)"] - base

    def over(label):
        return by_label[label] - base

    every = over(f"doppel split 1%, random, {EVERY}")
    pool = over(f"doppel split 1%, random, {POOL}")
    strip = over("Envoy strips control headers, no filter")
    mapped = over(f"Envoy strips control headers, {NOT_INLINE}, no filter")
    return [
        "- **doppel split 1%, sticky header** (`bench/envoy/filter/split.json`: the variant follows",
        "  a hash of `x-user-id`) reads every request's headers, for the key and to find spoofed",
        "  control headers. **random, on every request, Envoy strips control headers**",
        "  (`split-strip.json`: `strip_control: envoy`; `bench/envoy/split-strip.yaml`): the",
        "  connection manager's early header mutation removes the four control headers before the",
        "  filter runs, so the filter reads no header of an unchosen request, only a chosen one's:",
        f"  {every:+,.0f} ({every / lua:.2f}x Lua). **random, on a 5.95% pool** (`split-early.json`,",
        "  `bench/envoy/split-early.yaml`) is what the engine serves over full ADS for a policy",
        "  without a sticky key: Envoy also runs the filter only on the requests a route draws at",
        "  random (`pool_percent`: the 1% the filter chooses and the primary's 5% sample of the",
        "  rest); the others never reach it. It costs",
        f"  {pool:+,.0f} ({pool / lua:.2f}x Lua), of which Envoy's removal of the control headers is",
        f"  {strip:+,.0f} (the row **Envoy strips control headers, no filter**, `bench/envoy/strip.yaml`,",
        f"  which registers them as inline headers as `envoy/ads.yaml` does; {mapped:+,.0f} when they",
        "  are **not registered inline**: removing a header Envoy does not know by name builds a",
        "  hash map of the request's headers).",
    ]


def idle_mirror(rows):
    """What a mirror policy that copies nothing adds to each request of its route."""
    by_label = dict(rows)
    return by_label[f"proxied, {IDLE_MIRROR}"] - by_label["proxied, no filter"]


def throughput_floor(rows):
    """Prose: the share of no-filter throughput filters keep when proxying, measured."""
    by_label = dict(rows)
    proxied = by_label["proxied, no filter"]

    def kept(label):
        return proxied / by_label[f"proxied, {label}"]

    uncalled = kept("probe: Wasm filter, no request callback")
    pool = kept(f"doppel split 1%, random, {POOL}")
    every = (
        "0.97 of it is out of reach of a Wasm filter Envoy calls for every request, as merely"
        " loading one costs more"
        if uncalled < 0.97
        else "a Wasm filter Envoy calls for every request may keep 0.97 of it"
    )
    side = "above" if pool >= 0.97 else "below"
    return [
        "- **Throughput when proxying**: a Wasm filter Envoy never calls per request keeps",
        f"  {uncalled:.3f} of the no-filter throughput, one callback into the VM"
        f" {kept('probe: one callback into the VM'):.3f}, Lua {kept('Lua (header, random, header)'):.3f},",
        f"  doppel split 1% {kept('doppel split 1%, sticky header'):.3f} (sticky header),",
        f"  {kept(f'doppel split 1%, random, {EVERY}'):.3f} (random, on every request) and",
        f"  {pool:.3f} (random, on its 5.95% pool; {kept(f'doppel split 1%, random, {POOL_TEN}'):.3f}",
        "  with the primary sampled at 10% instead of 5%, a 10.9% pool). So",
        f"  {every};",
        f"  on its pool doppel split at 1% keeps {pool:.3f}, {side} 0.97.",
        "  doppel's routes alone (what the engine serves over full ADS with `filter: { kind: none }`: a weighted",
        f"  split by Envoy's router, no attribute matching, stickiness or id) keep {kept(ROUTES_ALONE):.3f}.",
    ]


def main(argv):
    parser = argparse.ArgumentParser(prog="scripts/bench-instructions", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="counted requests per configuration (default 2000)")
    parser.add_argument("--warmup", type=int, default=300, help="requests before counting starts (default 300)")
    parser.add_argument("--write", action="store_true", help=f"replace the '{SECTION[3:]}' section of BENCHMARKS.md")
    parser.add_argument(
        "--only", action="append", metavar="TEXT",
        help="only the configurations whose label contains TEXT (repeatable; prints counts, no table or --write)",
    )
    parser.add_argument(
        "--keep", metavar="DIR",
        help="copy each run's callgrind dump into DIR, named after its configuration (for callgrind_annotate)",
    )
    args = parser.parse_args(argv[1:])
    if args.only and args.write:
        parser.error("--only measures a subset: BENCHMARKS.md gets only whole runs, without --only")
    if args.requests < 1 or args.warmup < 0:
        parser.error("--requests must be at least 1, --warmup at least 0")
    envoy_bin = os.environ.get("ENVOY_BIN", "")
    if not os.access(envoy_bin, os.X_OK):
        load.fail(f"no Envoy at {envoy_bin!r}: run scripts/setup (or set ENVOY_BIN)")
    for var in ("DOPPEL_WASM", "DOPPEL_SPLIT_WASM", "DOPPEL_BARE_WASM", "DOPPEL_PROBE_DIR"):
        if not os.path.exists(os.environ.get(var, "")):
            load.fail(f"{var} is not set or missing: run through scripts/bench-instructions")
    if not shutil.which("valgrind"):
        subprocess.run([os.path.join(load.ROOT, "scripts", "setup"), "valgrind"], check=True)
    rows = measure(args, envoy_bin)
    if args.only:
        return
    command = "scripts/bench-instructions " + " ".join(shlex.quote(a) for a in argv[1:])
    text = section(args, rows, envoy_bin, command.strip())
    sys.stdout.write(text)
    if args.write:
        say(f"wrote the section to {load.write_section(text, SECTION)}")


if __name__ == "__main__":
    load.exit_on_sigterm()
    main(sys.argv)
