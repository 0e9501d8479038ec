//! doppel's statistics against reference values computed independently with scipy and numpy
//! (`scripts/stats-fixtures.py`, recorded in `tests/fixtures/stats/`).

use std::path::PathBuf;

use doppel_engine::metrics::Histogram;
use doppel_engine::stats::mann_whitney::mann_whitney;
use doppel_engine::stats::proportions::{
    Counts, ErrorRateConfig, ProportionTest, compare_error_rates, wilson,
};
use doppel_engine::stats::quantiles::quantile;
use doppel_engine::stats::sequential::{
    ErrorRateSequential, SequentialConfig, half_normal_mixture_log_lr,
};
use doppel_engine::stats::special::{erf, erfc, ln_gamma, norm_cdf, norm_pdf, norm_ppf, norm_sf};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stats")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with scripts/stats-fixtures.py)",
            path.display()
        )
    });
    let doc: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    doc["cases"].clone()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn counts(v: &Value) -> Vec<u64> {
    v.as_array().expect("array").iter().map(u).collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(f).collect()
}

/// `got` within `rel` relative error of `want` (or within `abs` absolutely).
#[track_caller]
fn close(what: &str, got: f64, want: f64, rel: f64, abs: f64) {
    let err = (got - want).abs();
    assert!(
        err <= abs || err <= rel * want.abs(),
        "{what}: got {got:e}, scipy says {want:e} (error {err:e})"
    );
}

#[test]
fn stats_special_functions_match_scipy() {
    let cases = fixture("special.json");
    for c in cases["normal"].as_array().expect("normal") {
        let x = f(&c["x"]);
        close(
            &format!("cdf({x})"),
            norm_cdf(x),
            f(&c["cdf"]),
            1e-12,
            1e-300,
        );
        close(&format!("sf({x})"), norm_sf(x), f(&c["sf"]), 1e-12, 1e-300);
        close(
            &format!("pdf({x})"),
            norm_pdf(x),
            f(&c["pdf"]),
            1e-12,
            1e-300,
        );
        close(&format!("erf({x})"), erf(x), f(&c["erf"]), 1e-13, 1e-300);
        close(&format!("erfc({x})"), erfc(x), f(&c["erfc"]), 1e-12, 1e-300);
    }
    for c in cases["ppf"].as_array().expect("ppf") {
        let p = f(&c["p"]);
        close(
            &format!("ppf({p})"),
            norm_ppf(p),
            f(&c["ppf"]),
            1e-12,
            1e-13,
        );
    }
    for c in cases["gammaln"].as_array().expect("gammaln") {
        let x = f(&c["x"]);
        close(
            &format!("gammaln({x})"),
            ln_gamma(x),
            f(&c["gammaln"]),
            1e-13,
            1e-13,
        );
    }
}

#[test]
fn stats_fisher_exact_matches_scipy() {
    let config = ErrorRateConfig {
        min_requests: 1,
        confidence: 0.95,
    };
    for c in fixture("fisher.json").as_array().expect("cases") {
        let (p, s) = (counts(&c["primary"]), counts(&c["shadow"]));
        let r = compare_error_rates(Counts::new(p[0], p[1]), Counts::new(s[0], s[1]), &config)
            .expect("valid counts");
        assert_eq!(r.test, ProportionTest::FisherExact);
        let what = format!("primary {p:?} shadow {s:?}");
        close(
            &format!("{what} one-sided"),
            r.p_worse,
            f(&c["p_worse"]),
            1e-9,
            1e-14,
        );
        close(
            &format!("{what} two-sided"),
            r.p_two_sided,
            f(&c["p_two_sided"]),
            1e-9,
            1e-14,
        );
    }
}

#[test]
fn stats_large_tables_use_the_z_test() {
    let config = ErrorRateConfig::default();
    for c in fixture("proportions_large.json").as_array().expect("cases") {
        let (p, s) = (counts(&c["primary"]), counts(&c["shadow"]));
        let r = compare_error_rates(Counts::new(p[0], p[1]), Counts::new(s[0], s[1]), &config)
            .expect("valid counts");
        assert_eq!(r.test, ProportionTest::NormalApprox);
        close("z", r.statistic, f(&c["z"]), 1e-9, 0.0);
        close("p from z", r.p_worse, f(&c["p_worse"]), 1e-9, 1e-300);
        // And the approximation is close to the exact test there.
        close(
            "p against Fisher",
            r.p_worse,
            f(&c["fisher_p_worse"]),
            0.05,
            1e-300,
        );
    }
}

#[test]
fn stats_mann_whitney_matches_scipy_on_expanded_samples() {
    for c in fixture("mann_whitney.json").as_array().expect("cases") {
        let primary = Histogram {
            bounds: floats(&c["bounds"]),
            counts: counts(&c["primary"]),
            sum: f(&c["primary_sum"]),
        };
        let shadow = Histogram {
            bounds: floats(&c["shadow_bounds"]),
            counts: counts(&c["shadow"]),
            sum: f(&c["shadow_sum"]),
        };
        let r = mann_whitney(&primary, &shadow, 1).expect("compatible histograms");
        let what = format!("primary {:?} shadow {:?}", primary.counts, shadow.counts);
        close(&format!("{what} U"), r.u, f(&c["u"]), 1e-12, 1e-9);
        close(
            &format!("{what} greater"),
            r.p_slower,
            f(&c["p_greater"]),
            1e-9,
            1e-15,
        );
        close(
            &format!("{what} two-sided"),
            r.p_two_sided,
            f(&c["p_two_sided"]),
            1e-9,
            1e-15,
        );
        close(&format!("{what} cles"), r.cles, f(&c["cles"]), 1e-12, 1e-12);
        if let Some(hl) = c["hodges_lehmann"].as_f64() {
            close(
                &format!("{what} hodges-lehmann"),
                r.hodges_lehmann,
                hl,
                1e-12,
                1e-9,
            );
        }
    }
}

#[test]
fn stats_quantiles_match_histogram_quantile() {
    for c in fixture("quantiles.json").as_array().expect("cases") {
        let h = Histogram {
            bounds: floats(&c["bounds"]),
            counts: counts(&c["counts"]),
            sum: 0.0,
        };
        let q = f(&c["q"]);
        let got = quantile(&h, q).expect("non-empty histogram");
        let what = format!("q{q} of {:?}", h.counts);
        close(&what, got.value, f(&c["value"]), 1e-12, 1e-12);
        assert_eq!(
            got.in_overflow,
            c["in_overflow"].as_bool().expect("bool"),
            "{what}"
        );
    }
}

#[test]
fn stats_mixture_closed_form_matches_numerical_integration() {
    for c in fixture("mixture.json").as_array().expect("cases") {
        let (theta, v, tau) = (f(&c["theta"]), f(&c["v"]), f(&c["tau"]));
        let got = half_normal_mixture_log_lr(theta, v, tau);
        close(
            &format!("theta {theta} v {v} tau {tau}"),
            got,
            f(&c["log_lr"]),
            1e-7,
            1e-7,
        );
    }
}

#[test]
fn stats_error_sequential_matches_scipy_noncentral_hypergeometric() {
    for c in fixture("sequential_errors.json").as_array().expect("cases") {
        let config = SequentialConfig {
            alpha: 0.01,
            tau: f(&c["tau"]),
            min_samples: 1,
        };
        let mut test = ErrorRateSequential::new(config).expect("valid config");
        let want = floats(&c["log_lr"]);
        for (i, interval) in c["intervals"]
            .as_array()
            .expect("intervals")
            .iter()
            .enumerate()
        {
            let (p, s) = (counts(&interval[0]), counts(&interval[1]));
            let r = test
                .observe(Counts::new(p[0], p[1]), Counts::new(s[0], s[1]))
                .expect("valid counts");
            close(
                &format!("interval {i} of {:?}", c["intervals"]),
                r.log_lr,
                want[i],
                1e-8,
                1e-9,
            );
        }
    }
}

#[test]
fn stats_confidence_intervals_match_scipy() {
    for c in fixture("intervals.json").as_array().expect("cases") {
        let (p, s) = (counts(&c["primary"]), counts(&c["shadow"]));
        let (primary, shadow) = (Counts::new(p[0], p[1]), Counts::new(s[0], s[1]));
        let confidence = f(&c["confidence"]);
        let z = norm_ppf(1.0 - (1.0 - confidence) / 2.0);
        let what = format!("primary {p:?} shadow {s:?} at {confidence}");
        for (side, counts, key) in [
            ("shadow", shadow, "wilson_shadow"),
            ("primary", primary, "wilson_primary"),
        ] {
            let (lo, hi) = wilson(counts, z);
            let want = floats(&c[key]);
            close(
                &format!("{what} {side} wilson low"),
                lo,
                want[0],
                1e-9,
                1e-12,
            );
            close(
                &format!("{what} {side} wilson high"),
                hi,
                want[1],
                1e-9,
                1e-12,
            );
        }
        let config = ErrorRateConfig {
            min_requests: 1,
            confidence,
        };
        let r = compare_error_rates(primary, shadow, &config).expect("valid counts");
        let d = floats(&c["difference"]);
        close(
            &format!("{what} difference"),
            r.difference.estimate,
            d[0],
            1e-12,
            1e-12,
        );
        close(
            &format!("{what} newcombe low"),
            r.difference.lower,
            d[1],
            1e-9,
            1e-12,
        );
        close(
            &format!("{what} newcombe high"),
            r.difference.upper,
            d[2],
            1e-9,
            1e-12,
        );
        match (c["ratio"].as_array(), r.ratio) {
            (Some(want), Some(got)) => {
                close(
                    &format!("{what} ratio"),
                    got.estimate,
                    f(&want[0]),
                    1e-12,
                    0.0,
                );
                close(
                    &format!("{what} ratio low"),
                    got.lower,
                    f(&want[1]),
                    1e-9,
                    0.0,
                );
                close(
                    &format!("{what} ratio high"),
                    got.upper,
                    f(&want[2]),
                    1e-9,
                    0.0,
                );
            }
            (None, got) => {
                // A zero count: doppel adds 0.5 to every count (scipy has no interval there).
                let got = got.expect("one side has errors");
                assert!(
                    got.lower < got.estimate && got.estimate < got.upper,
                    "{what}: {got:?}"
                );
            }
            (Some(_), None) => panic!("{what}: no ratio where scipy has one"),
        }
    }
}
