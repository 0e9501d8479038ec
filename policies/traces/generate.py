#!/usr/bin/env python3
"""Writes the example traces of policies/traces/ (docs/trace-format.md), deterministically.

    python3 policies/traces/generate.py

Each trace is 30 minutes of 10-second windows of the `checkout` service: the primary serves
about 200 requests a second, the shadow about 5% of that. Latency is log-normal (median 20 ms)
recorded on Envoy's default histogram buckets. Errors are independent per request.

- healthy.jsonl: both variants fail 1% of requests and have the same latency.
- errors-regression.jsonl: the same, but from minute 10 (window 60) the shadow fails 6%.
- latency-regression.jsonl: the same as healthy, but from minute 10 the shadow is 40% slower.
- search-mirror.jsonl: 15 minutes of the `search` service in mirror mode: 20% of the primary's
  requests are copied to the shadow and compared; from minute 5 (window 30) 3% of the compared
  answers differ in body.
"""

import json
import math
import os
import random

BOUNDS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
          300000, 600000, 1800000, 3600000]
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
WINDOW_MS = 10_000
WINDOWS = 180


def poisson(rng, mean):
    # Knuth's method on chunks, exact enough for means in the thousands.
    total = 0
    while mean > 0:
        chunk = min(mean, 30.0)
        mean -= chunk
        limit, k, p = math.exp(-chunk), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                break
            k += 1
        total += k
    return total


def variant(rng, rate_per_s, error_rate, latency_factor):
    requests = poisson(rng, rate_per_s * WINDOW_MS / 1000)
    errors = sum(1 for _ in range(requests) if rng.random() < error_rate)
    counts = [0] * (len(BOUNDS) + 1)
    total = 0.0
    for _ in range(requests):
        ms = rng.lognormvariate(math.log(20.0), 0.6) * latency_factor
        total += ms
        i = next((i for i, b in enumerate(BOUNDS) if ms <= b), len(BOUNDS))
        counts[i] += 1
    return {
        "requests": requests,
        "errors_5xx": errors,
        "latency_ms": {"bounds": BOUNDS, "counts": counts, "sum": round(total, 3)},
    }


def write(name, seed, shadow_error_after, shadow_latency_after):
    rng = random.Random(seed)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    with open(path, "w") as out:
        for w in range(WINDOWS):
            start = START_MS + w * WINDOW_MS
            late = w >= 60
            line = {
                "service": "checkout",
                "start_ms": start,
                "end_ms": start + WINDOW_MS,
                "primary": variant(rng, 200.0, 0.01, 1.0),
                "shadow": variant(
                    rng,
                    10.0,
                    shadow_error_after if late else 0.01,
                    shadow_latency_after if late else 1.0,
                ),
            }
            out.write(json.dumps(line, separators=(",", ":")) + "\n")


def write_mirror(name, seed):
    rng = random.Random(seed)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    with open(path, "w") as out:
        for w in range(90):
            start = START_MS + w * WINDOW_MS
            primary = variant(rng, 200.0, 0.005, 1.0)
            copies = sum(1 for _ in range(primary["requests"]) if rng.random() < 0.2)
            shadow = variant(rng, copies / (WINDOW_MS / 1000), 0.005, 1.0)
            compared = shadow["requests"] - shadow["errors_5xx"]
            body_rate = 0.03 if w >= 30 else 0.0
            line = {
                "service": "search",
                "start_ms": start,
                "end_ms": start + WINDOW_MS,
                "primary": primary,
                "shadow": shadow,
                "mirror": {
                    "sent": copies,
                    "compared": compared,
                    "mismatch_status": 0,
                    "mismatch_body": sum(1 for _ in range(compared) if rng.random() < body_rate),
                    "mismatch_latency": 0,
                    "failed": shadow["errors_5xx"],
                    "skipped": 0,
                },
            }
            out.write(json.dumps(line, separators=(",", ":")) + "\n")


write("healthy.jsonl", 1, 0.01, 1.0)
write("errors-regression.jsonl", 2, 0.06, 1.0)
write("latency-regression.jsonl", 3, 0.01, 1.4)
write_mirror("search-mirror.jsonl", 4)
