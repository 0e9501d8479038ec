//! Properties of doppel's statistics (proptest) and their refusals and inconclusive states.

use doppel_engine::metrics::Histogram;
use doppel_engine::stats::mann_whitney::mann_whitney;
use doppel_engine::stats::proportions::{Counts, ErrorRateConfig, compare_error_rates};
use doppel_engine::stats::quantiles::{common_bounds, quantile, summarize, total};
use doppel_engine::stats::sequential::{ErrorRateSequential, LatencySequential, SequentialConfig};
use doppel_engine::stats::{Evidence, StatsError};
use proptest::prelude::*;

const CONFIG: ErrorRateConfig = ErrorRateConfig {
    min_requests: 30,
    confidence: 0.95,
};

fn counts_below(max: u64) -> impl Strategy<Value = Counts> {
    (0u64..max).prop_flat_map(|n| (Just(n), 0..=n).prop_map(|(n, e)| Counts::new(n, e)))
}

fn counts() -> impl Strategy<Value = Counts> {
    counts_below(1500)
}

fn histogram(bounds: Vec<f64>) -> impl Strategy<Value = Histogram> {
    let len = bounds.len() + 1;
    proptest::collection::vec(0u64..200, len).prop_map(move |counts| Histogram {
        bounds: bounds.clone(),
        counts,
        sum: 0.0,
    })
}

fn latency() -> impl Strategy<Value = Histogram> {
    histogram(vec![5.0, 10.0, 25.0, 50.0, 100.0, 250.0])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn stats_error_p_values_are_probabilities_and_two_sided_is_symmetric(p in counts(), s in counts()) {
        let r = compare_error_rates(p, s, &CONFIG).expect("valid counts");
        prop_assert!((0.0..=1.0).contains(&r.p_worse));
        prop_assert!((0.0..=1.0).contains(&r.p_two_sided));
        let swapped = compare_error_rates(s, p, &CONFIG).expect("valid counts");
        prop_assert!((r.p_two_sided - swapped.p_two_sided).abs() <= 1e-9 * r.p_two_sided.max(1e-300));
        prop_assert!(r.difference.lower <= r.difference.estimate + 1e-12);
        prop_assert!(r.difference.estimate <= r.difference.upper + 1e-12);
    }

    #[test]
    fn stats_more_shadow_errors_never_raise_p_worse(p in counts(), n in 1u64..500, e in 0u64..500) {
        let e = e.min(n - 1);
        let fewer = compare_error_rates(p, Counts::new(n, e), &CONFIG).expect("valid");
        let more = compare_error_rates(p, Counts::new(n, e + 1), &CONFIG).expect("valid");
        prop_assert!(more.p_worse <= fewer.p_worse * (1.0 + 1e-9) + 1e-300);
    }

    #[test]
    fn stats_mann_whitney_is_a_probability_and_antisymmetric(p in latency(), s in latency()) {
        let r = mann_whitney(&p, &s, 1).expect("same bounds");
        let back = mann_whitney(&s, &p, 1).expect("same bounds");
        prop_assert!((0.0..=1.0).contains(&r.p_slower) && (0.0..=1.0).contains(&r.p_two_sided));
        prop_assert!((0.0..=1.0).contains(&r.cles));
        if r.shadow_n > 0 && r.primary_n > 0 {
            prop_assert!((r.cles + back.cles - 1.0).abs() < 1e-9);
            prop_assert!((r.u + back.u - (r.shadow_n * r.primary_n) as f64).abs() < 1e-6);
        }
        prop_assert!((r.p_two_sided - back.p_two_sided).abs() < 1e-12);
        prop_assert!((r.hodges_lehmann + back.hodges_lehmann).abs() < 1e-9);
    }

    #[test]
    fn stats_slowing_the_shadow_never_raises_p_slower(p in latency(), s in latency(), from in 0usize..6) {
        prop_assume!(s.counts[from] > 0);
        let mut slower = s.clone();
        slower.counts[from] -= 1;
        slower.counts[from + 1] += 1;
        let before = mann_whitney(&p, &s, 1).expect("same bounds");
        let after = mann_whitney(&p, &slower, 1).expect("same bounds");
        prop_assert!(after.p_slower <= before.p_slower + 1e-12);
        prop_assert!(after.u >= before.u);
    }

    #[test]
    fn stats_quantiles_are_monotone_and_inside_the_buckets(h in latency(), a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        match (quantile(&h, lo), quantile(&h, hi)) {
            (Some(x), Some(y)) => {
                prop_assert!(x.value <= y.value + 1e-9);
                prop_assert!(x.value >= 0.0 && y.value <= 250.0);
            }
            (None, None) => prop_assert_eq!(total(&h), 0),
            _ => prop_assert!(false, "quantile defined for one q and not the other"),
        }
    }

    #[test]
    fn stats_common_bounds_keep_every_observation(p in histogram(vec![1.0, 5.0, 10.0, 50.0]), s in histogram(vec![1.0, 2.0, 5.0, 20.0, 50.0, 80.0])) {
        let (cp, cs) = common_bounds(&p, &s).expect("bounds in common");
        prop_assert_eq!(&cp.bounds, &vec![1.0, 5.0, 50.0]);
        prop_assert_eq!(total(&cp), total(&p));
        prop_assert_eq!(total(&cs), total(&s));
        // Bucket by bucket: the shadow's (1, 2] and (2, 5] land in (1, 5].
        prop_assert_eq!(cs.counts[1], s.counts[1] + s.counts[2]);
    }

    #[test]
    fn stats_error_sequential_p_value_only_falls(steps in proptest::collection::vec((counts_below(400), counts_below(400)), 1..20)) {
        let mut test = ErrorRateSequential::new(SequentialConfig::errors(0.05)).expect("valid");
        let mut last = 1.0;
        for (p, s) in steps {
            let r = test.observe(p, s).expect("valid counts");
            prop_assert!(r.p_value <= last + 1e-15 && r.p_value >= 0.0);
            prop_assert!(r.log_lr.is_finite());
            last = r.p_value;
        }
    }
}

#[test]
fn stats_no_data_is_inconclusive_never_a_pass() {
    let r = compare_error_rates(Counts::new(1000, 5), Counts::new(0, 0), &CONFIG).expect("valid");
    match &r.evidence {
        Evidence::Inconclusive(i) => assert_eq!(i.code, "no_data", "{}", i.reason),
        Evidence::Sufficient => panic!("no shadow data judged sufficient"),
    }
    let r = compare_error_rates(Counts::new(1000, 5), Counts::new(10, 0), &CONFIG).expect("valid");
    match &r.evidence {
        Evidence::Inconclusive(i) => {
            assert_eq!(i.code, "too_few");
            assert!(i.reason.contains("shadow has 10 requests"), "{}", i.reason);
        }
        Evidence::Sufficient => panic!("10 requests judged sufficient"),
    }
    let empty = Histogram {
        bounds: vec![10.0],
        counts: vec![0, 0],
        sum: 0.0,
    };
    let r = mann_whitney(&empty, &empty, 10).expect("same bounds");
    assert!(!r.evidence.is_sufficient());
    assert!(summarize(&empty).is_none());
    let test = ErrorRateSequential::new(SequentialConfig::errors(0.01)).expect("valid");
    assert!(!test.result().evidence.is_sufficient());
}

#[test]
fn stats_zero_error_primary_does_not_hide_a_failing_shadow() {
    let r = compare_error_rates(Counts::new(5000, 0), Counts::new(50, 3), &CONFIG).expect("valid");
    assert!(r.p_worse < 1e-5, "p = {}", r.p_worse);
    assert!(
        r.ratio.is_some_and(|ratio| ratio.lower > 1.0),
        "{:?}",
        r.ratio
    );
    assert!(r.difference.lower > 0.0, "{:?}", r.difference);

    let mut test = ErrorRateSequential::new(SequentialConfig::errors(0.01)).expect("valid");
    let mut crossed = None;
    for i in 1..=10 {
        // 1% of 2000 requests to the shadow, which fails 1 in 10 of them.
        let r = test
            .observe(Counts::new(1980, 0), Counts::new(20, 2))
            .expect("valid");
        if r.crossed {
            crossed = Some(i);
            break;
        }
    }
    assert!(crossed.is_some_and(|i| i <= 3), "crossed at {crossed:?}");
}

#[test]
fn stats_refuses_bad_input_naming_it() {
    let e = compare_error_rates(Counts::new(10, 11), Counts::new(10, 0), &CONFIG).unwrap_err();
    assert_eq!(e.code(), "errors_exceed_requests");
    assert!(
        e.to_string()
            .contains("primary: 11 errors out of 10 requests"),
        "{e}"
    );

    let bad = Histogram {
        bounds: vec![10.0, 5.0],
        counts: vec![1, 2, 3],
        sum: 0.0,
    };
    let ok = Histogram {
        bounds: vec![1.0, 2.0],
        counts: vec![1, 2, 3],
        sum: 0.0,
    };
    let e = mann_whitney(&ok, &bad, 1).unwrap_err();
    assert!(
        matches!(
            e,
            StatsError::BadHistogram {
                variant: "shadow",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("not strictly increasing"), "{e}");

    let other = Histogram {
        bounds: vec![3.0, 4.0],
        counts: vec![1, 2, 3],
        sum: 0.0,
    };
    let e = mann_whitney(&ok, &other, 1).unwrap_err();
    assert_eq!(e.code(), "no_common_bounds", "{e}");

    let e = ErrorRateSequential::new(SequentialConfig::errors(1.5)).unwrap_err();
    assert_eq!(e.code(), "bad_parameter");
    let mut lat = LatencySequential::new(SequentialConfig::latency(0.01)).expect("valid");
    let e = lat.observe(&ok, &bad).unwrap_err();
    assert_eq!(e.code(), "bad_histogram");
}

#[test]
fn stats_latency_sequential_waits_for_its_minimum_then_detects() {
    let mut test = LatencySequential::new(SequentialConfig::latency(0.01)).expect("valid");
    let bounds = vec![10.0, 20.0, 50.0, 100.0];
    let primary = Histogram {
        bounds: bounds.clone(),
        counts: vec![300, 400, 250, 50, 0],
        sum: 0.0,
    };
    let shadow = Histogram {
        bounds,
        counts: vec![5, 8, 10, 7, 0],
        sum: 0.0,
    };
    let first = test.observe(&primary, &shadow).expect("valid");
    assert_eq!(first.looks, 0, "looked before the minimum sample");
    assert!(!first.evidence.is_sufficient());
    let mut last = first;
    for _ in 0..20 {
        last = test.observe(&primary, &shadow).expect("valid");
    }
    assert!(last.evidence.is_sufficient());
    assert!(
        last.crossed,
        "a clearly slower shadow was not detected: {last:?}"
    );
    assert!(last.effect > 0.1);
}

#[test]
fn stats_tail_sequential_sees_a_wider_spread_the_rank_test_misses() {
    use doppel_engine::stats::sequential::LatencyTailSequential;
    let bounds = vec![10.0, 20.0, 40.0, 80.0, 160.0];
    // Same median bucket, but the shadow puts more weight in both tails.
    let primary = Histogram {
        bounds: bounds.clone(),
        counts: vec![20, 200, 560, 200, 20, 0],
        sum: 0.0,
    };
    let shadow = Histogram {
        bounds,
        counts: vec![4, 3, 6, 3, 4, 0],
        sum: 0.0,
    };
    let mut tail = LatencyTailSequential::new(0.95, SequentialConfig::errors(0.01)).expect("valid");
    let mut rank = LatencySequential::new(SequentialConfig::latency(0.01)).expect("valid");
    let (mut t, mut r) = (None, None);
    for _ in 0..40 {
        t = Some(tail.observe(&primary, &shadow).expect("valid"));
        r = Some(rank.observe(&primary, &shadow).expect("valid"));
    }
    let (t, r) = (t.expect("looked"), r.expect("looked"));
    assert_eq!(
        tail.threshold(),
        Some(80.0),
        "the primary's p95 bucket bound"
    );
    assert!(t.crossed, "tail test missed a heavier tail: {t:?}");
    assert!(
        !r.crossed,
        "rank test should not see a symmetric spread: {r:?}"
    );

    // And a shadow like the primary gives no evidence.
    let mut same = LatencyTailSequential::new(0.95, SequentialConfig::errors(0.01)).expect("valid");
    for _ in 0..40 {
        let r = same.observe(&primary, &primary).expect("valid");
        assert!(!r.crossed);
    }
}
