#!/usr/bin/env python3
"""Regenerates the reference values doppel's statistics are tested against.

The values come from scipy and numpy, independently of the Rust code, and are written as JSON
into policy-engine/tests/fixtures/stats/ (policy-engine/tests/engine/stats_reference.rs reads them). Run:

    python3 -m venv .tools/stats-venv && .tools/stats-venv/bin/pip install scipy numpy
    .tools/stats-venv/bin/python scripts/stats-fixtures.py

Everything is seeded, so a rerun with the same scipy gives the same files.
"""

import json
import math
import os

import numpy as np
import scipy
from scipy import integrate, special, stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "policy-engine", "tests", "fixtures", "stats")
RNG = np.random.default_rng(20261122)
ENVOY_BOUNDS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                300000, 600000, 1800000, 3600000]


def write(name, cases):
    os.makedirs(OUT, exist_ok=True)
    doc = {"generator": "scripts/stats-fixtures.py", "scipy": scipy.__version__, "cases": cases}
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"{name}: {len(cases)} cases")


def special_functions():
    xs = [-38.0, -20.0, -8.5, -5.0, -3.0, -2.5, -1.96, -1.0, -0.3, 0.0, 1e-8, 0.2, 0.5, 1.0,
          1.6448536269514722, 2.0, 2.4999, 2.5, 2.5001, 3.0, 4.0, 6.0, 8.0, 10.0, 20.0, 37.5]
    normal = [{"x": x, "cdf": stats.norm.cdf(x), "sf": stats.norm.sf(x), "pdf": stats.norm.pdf(x),
               "erf": special.erf(x), "erfc": special.erfc(x)} for x in xs]
    ps = [1e-300, 1e-100, 1e-20, 1e-10, 1e-5, 0.001, 0.01, 0.02425, 0.025, 0.05, 0.1, 0.3, 0.5,
          0.7, 0.9, 0.95, 0.975, 0.97575, 0.99, 0.999, 0.99999, 1 - 1e-10, 1 - 1e-15]
    ppf = [{"p": p, "ppf": stats.norm.ppf(p)} for p in ps]
    gs = [1e-5, 0.1, 0.5, 1.0, 1.5, 2.0, 3.7, 10.0, 33.0, 100.5, 1000.0, 123456.7, 1e7, 1e10]
    gammaln = [{"x": x, "gammaln": special.gammaln(x)} for x in gs]
    write("special.json", {"normal": normal, "ppf": ppf, "gammaln": gammaln})


def fisher_case(primary, shadow):
    (pn, pe), (sn, se) = primary, shadow
    table = [[se, sn - se], [pe, pn - pe]]
    return {
        "primary": [pn, pe],
        "shadow": [sn, se],
        "p_worse": stats.fisher_exact(table, alternative="greater").pvalue,
        "p_two_sided": stats.fisher_exact(table, alternative="two-sided").pvalue,
    }


def fisher():
    fixed = [((1000, 0), (20, 3)), ((2000, 0), (40, 4)), ((100, 1), (100, 1)), ((10, 0), (10, 0)),
             ((50, 50), (5, 5)), ((1000, 10), (1000, 20)), ((5000, 50), (50, 1)),
             ((5000, 50), (50, 0)), ((30, 2), (7, 6)), ((100000, 1000), (1000, 25)),
             ((3, 1), (2, 2)), ((99000, 990), (1000, 20)), ((20, 19), (20, 3))]
    cases = [fisher_case(p, s) for p, s in fixed]
    for _ in range(60):
        pn = int(RNG.integers(1, 5000))
        sn = int(RNG.integers(1, 500))
        rate = float(RNG.choice([0.0, 0.001, 0.01, 0.05, 0.3]))
        lift = float(RNG.choice([1.0, 1.0, 2.0, 5.0]))
        pe = int(RNG.binomial(pn, rate))
        se = int(RNG.binomial(sn, min(1.0, rate * lift)))
        cases.append(fisher_case((pn, pe), (sn, se)))
    write("fisher.json", cases)


def large_tables():
    """Beyond the exact limit: the z test, checked against its formula and against Fisher."""
    cases = []
    for pn, pe, sn, se in [(4_000_000, 400_000, 2_000_000, 201_000),
                           (3_000_000, 150_000, 1_000_000, 50_600)]:
        p = (pe + se) / (pn + sn)
        z = (se / sn - pe / pn) / math.sqrt(p * (1 - p) * (1 / sn + 1 / pn))
        table = [[se, sn - se], [pe, pn - pe]]
        cases.append({"primary": [pn, pe], "shadow": [sn, se], "z": z,
                      "p_worse": stats.norm.sf(z),
                      "fisher_p_worse": stats.fisher_exact(table, alternative="greater").pvalue})
    write("proportions_large.json", cases)


def intervals():
    """Wilson intervals (scipy's binomtest), Newcombe's hybrid score interval built from them,
    and the Katz interval of the rate ratio (scipy's relative_risk)."""
    cases = []
    for (pn, pe), (sn, se), conf in [((1000, 10), (100, 3), 0.95), ((2000, 20), (20, 2), 0.95),
                                     ((500, 0), (50, 4), 0.9), ((100, 50), (100, 60), 0.99),
                                     ((10000, 100), (10000, 130), 0.95), ((40, 1), (40, 0), 0.95)]:
        ws = stats.binomtest(se, sn).proportion_ci(confidence_level=conf, method="wilson")
        wp = stats.binomtest(pe, pn).proportion_ci(confidence_level=conf, method="wilson")
        ps, pp = se / sn, pe / pn
        d = ps - pp
        newcombe = [d - math.sqrt((ps - ws.low) ** 2 + (wp.high - pp) ** 2),
                    d + math.sqrt((ws.high - ps) ** 2 + (pp - wp.low) ** 2)]
        ratio = None
        if se > 0 and pe > 0:
            rr = stats.contingency.relative_risk(se, sn, pe, pn)
            ci = rr.confidence_interval(confidence_level=conf)
            ratio = [rr.relative_risk, ci.low, ci.high]
        cases.append({"primary": [pn, pe], "shadow": [sn, se], "confidence": conf,
                      "wilson_shadow": [ws.low, ws.high], "wilson_primary": [wp.low, wp.high],
                      "difference": [d] + newcombe, "ratio": ratio})
    write("intervals.json", cases)


def expand(bounds, counts):
    """One value per observation: the bucket's index (every bucket is one tie group)."""
    return np.repeat(np.arange(len(bounds) + 1), counts)


def midpoints(bounds):
    lows = [0.0] + bounds[:-1]
    return [(min(lo, b) + b) / 2 for lo, b in zip(lows, bounds)] + [bounds[-1]]


def lognormal_counts(n, median, sigma, bounds):
    xs = RNG.lognormal(math.log(median), sigma, n)
    idx = np.searchsorted(np.array(bounds), xs, side="left")
    return np.bincount(idx, minlength=len(bounds) + 1).tolist(), float(xs.sum())


def mann_whitney_case(bounds, primary, shadow, shadow_bounds=None, primary_sum=0.0, shadow_sum=0.0):
    sb = shadow_bounds or bounds
    # Put the shadow on the primary's bounds when it has its own (finer) ones: each fine bucket
    # goes to the first primary bucket whose bound is at or above its upper bound.
    if shadow_bounds:
        mapped = [0] * (len(bounds) + 1)
        for i, c in enumerate(shadow):
            j = len(bounds) if i == len(sb) else int(np.searchsorted(bounds, sb[i], side="left"))
            mapped[j] += c
    else:
        mapped = shadow
    x = expand(bounds, mapped)
    y = expand(bounds, primary)
    case = {"bounds": bounds, "primary": primary, "shadow": shadow, "shadow_bounds": sb,
            "primary_sum": primary_sum, "shadow_sum": shadow_sum}
    if len(x) and len(y):
        g = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic", use_continuity=True)
        t = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", use_continuity=True)
        mids = np.array(midpoints(bounds))
        diffs = np.subtract.outer(mids[x], mids[y]).ravel() if len(x) * len(y) <= 4_000_000 else None
        case.update({"u": float(g.statistic), "p_greater": float(g.pvalue), "p_two_sided": float(t.pvalue),
                     "cles": float(g.statistic) / (len(x) * len(y)),
                     "hodges_lehmann": None if diffs is None else float(np.median(diffs))})
    return case


def mann_whitney():
    b = [10.0, 20.0, 50.0]
    cases = [mann_whitney_case(b, [50, 40, 10, 0], [10, 40, 50, 0]),
             mann_whitney_case(b, [5, 5, 5, 5], [5, 5, 5, 5]),
             mann_whitney_case(b, [0, 7, 0, 0], [0, 3, 1, 0]),
             mann_whitney_case(b, [1, 0, 0, 0], [0, 0, 0, 2]),
             mann_whitney_case([1.0, 2.0, 5.0, 10.0], [30, 20, 10, 5, 1], [2, 3, 4, 5, 6, 7, 8],
                               shadow_bounds=[0.5, 1.0, 2.0, 3.0, 5.0, 10.0])]
    for median_s, sigma_s, n_p, n_s in [(40, 0.6, 2000, 20), (44, 0.6, 2000, 300), (40, 0.9, 1500, 400),
                                        (40, 0.6, 800, 800), (60, 0.5, 300, 40), (35, 0.7, 2000, 2000)]:
        p, ps = lognormal_counts(n_p, 40, 0.6, ENVOY_BOUNDS)
        s, ss = lognormal_counts(n_s, median_s, sigma_s, ENVOY_BOUNDS)
        cases.append(mann_whitney_case(ENVOY_BOUNDS, p, s, primary_sum=ps, shadow_sum=ss))
    write("mann_whitney.json", cases)


def prometheus_quantile(bounds, counts, q):
    """histogram_quantile, written from Prometheus' documentation: first non-empty bucket whose
    cumulative count reaches q * total, linear inside it, the first bucket starting at 0."""
    total = sum(counts)
    rank = q * total
    cum = np.cumsum(counts)
    for i, c in enumerate(counts):
        if c > 0 and cum[i] >= rank:
            if i == len(bounds):
                return bounds[-1], True
            lo = 0.0 if i == 0 else bounds[i - 1]
            before = cum[i] - c
            return lo + (bounds[i] - lo) * max(0.0, (rank - before) / c), False
    return bounds[-1], True


def quantiles():
    cases = []
    hists = [([10.0, 20.0, 50.0], [50, 40, 10, 0]), ([10.0, 20.0, 50.0], [0, 0, 3, 1]),
             ([10.0, 20.0, 50.0], [0, 0, 0, 5]), ([1.0], [1, 0])]
    for n in (5, 100, 10000):
        hists.append((ENVOY_BOUNDS, lognormal_counts(n, 40, 0.6, ENVOY_BOUNDS)[0]))
    for bounds, counts in hists:
        for q in (0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0):
            v, over = prometheus_quantile(bounds, counts, q)
            cases.append({"bounds": bounds, "counts": counts, "q": q, "value": float(v), "in_overflow": over})
    write("quantiles.json", cases)


def mixture():
    """The one-sided normal mixture likelihood ratio, by numerical integration (not the closed form)."""
    cases = []
    for theta, v, tau in [(0.05, 1e-4, 0.05), (0.0, 1e-3, 0.05), (-0.02, 4e-4, 0.05), (0.1, 1e-3, 0.02),
                          (0.3, 0.05, 1.0), (0.01, 1e-5, 0.1)]:
        def integrand(t):
            prior = 2 * stats.norm.pdf(t, 0, tau)
            return prior * math.exp((t * theta - t * t / 2) / v)
        val, _ = integrate.quad(integrand, 0, 12 * tau, limit=400, points=[max(theta, 0.0)])
        cases.append({"theta": theta, "v": v, "tau": tau, "log_lr": math.log(val)})
    write("mixture.json", cases)


def conditional_sequential():
    """The error-rate mSPRT on a short sequence of intervals, with scipy's Fisher noncentral
    hypergeometric distribution and doppel's documented grid prior (32 points, 6 tau, half-normal)."""
    cases = []
    for tau, intervals in [
        (1.0, [((2000, 20), (20, 0)), ((1980, 18), (20, 2)), ((1990, 25), (10, 1)), ((2000, 0), (0, 0))]),
        (1.0, [((2000, 0), (20, 2)), ((2000, 0), (20, 1)), ((2000, 1), (20, 3))]),
        (0.5, [((500, 5), (500, 12)), ((500, 7), (500, 9)), ((500, 3), (500, 11))]),
        (1.0, [((100, 50), (100, 60)), ((100, 0), (100, 0)), ((100, 100), (100, 100))]),
    ]:
        step = 6.0 * tau / 32
        grid = (np.arange(32) + 0.5) * step
        log_w = -0.5 * (grid / tau) ** 2
        log_w -= special.logsumexp(log_w)
        log_post = log_w.copy()
        trail = []
        for (pn, pe), (sn, se) in intervals:
            total = pe + se
            if sn > 0 and pn > 0 and 0 < total < pn + sn:
                null = stats.hypergeom.logpmf(se, pn + sn, sn, total)
                for i, g in enumerate(grid):
                    alt = stats.nchypergeom_fisher.logpmf(se, pn + sn, sn, total, math.exp(g))
                    log_post[i] += alt - null
            trail.append(float(special.logsumexp(log_post)))
        cases.append({"tau": tau, "intervals": [[list(p), list(s)] for p, s in intervals], "log_lr": trail})
    write("sequential_errors.json", cases)


if __name__ == "__main__":
    special_functions()
    fisher()
    large_tables()
    intervals()
    mann_whitney()
    quantiles()
    mixture()
    conditional_sequential()
