//! The benchmark's simulator produces the traffic it claims to: shares, error rates and
//! latency distributions match the model, and the same seed gives the same run.

use doppel_engine::stats::quantiles::{mean, quantile, total};
use doppel_engine::stats::sim::bench::{BASELINE, HOUR, run, scenario};
use doppel_engine::stats::sim::{ENVOY_BOUNDS_MS, Simulator, VariantModel};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[test]
fn stats_sim_matches_its_model() {
    let shadow = VariantModel {
        error_rate: 0.05,
        median_ms: 60.0,
        sigma: 0.4,
    };
    let sim = Simulator::new(scenario("check", 5000, 0.2, 1, BASELINE, shadow));
    let mut rng = StdRng::seed_from_u64(7);
    let (mut requests, mut shadow_requests, mut shadow_errors, mut primary_errors) = (0, 0, 0, 0);
    let mut latency = vec![0u64; ENVOY_BOUNDS_MS.len() + 1];
    let mut sum = 0.0;
    for _ in 0..200 {
        let i = sim.interval(&mut rng);
        requests += i.primary.requests + i.shadow.requests;
        shadow_requests += i.shadow.requests;
        shadow_errors += i.shadow.errors;
        primary_errors += i.primary.errors;
        assert_eq!(total(&i.shadow_latency), i.shadow.requests);
        for (acc, c) in latency.iter_mut().zip(&i.shadow_latency.counts) {
            *acc += c;
        }
        sum += i.shadow_latency.sum;
    }
    let primary_requests = requests - shadow_requests;
    assert_eq!(requests, 5000 * 200);
    let share = shadow_requests as f64 / requests as f64;
    assert!((share - 0.2).abs() < 0.003, "shadow share {share}");
    let rate = shadow_errors as f64 / shadow_requests as f64;
    assert!((rate - 0.05).abs() < 0.002, "shadow error rate {rate}");
    let rate = primary_errors as f64 / primary_requests as f64;
    assert!((rate - 0.01).abs() < 0.0005, "primary error rate {rate}");

    let h = doppel_engine::metrics::Histogram {
        bounds: ENVOY_BOUNDS_MS.to_vec(),
        counts: latency,
        sum,
    };
    let m = mean(&h).expect("observations");
    assert!(
        (m / shadow.mean_ms() - 1.0).abs() < 0.01,
        "mean {m} against {}",
        shadow.mean_ms()
    );
    // The median falls in the (50, 100] bucket: its share below 60 ms is checked through the
    // bucket counts (the model's probability of <= 50 ms is Phi(ln(50/60)/0.4) = 0.325).
    let below_50: u64 = h.counts[..6].iter().sum();
    let p = below_50 as f64 / shadow_requests as f64;
    assert!((p - 0.325).abs() < 0.005, "share at or below 50 ms {p}");
    assert!(quantile(&h, 0.5).is_some_and(|q| q.value > 50.0 && q.value <= 100.0));
    assert!((shadow.quantile_ms(0.5) - 60.0).abs() < 1e-9);
}

#[test]
fn stats_sim_is_deterministic_per_seed() {
    let s = scenario("A/A", 200, 0.01, HOUR / 6, BASELINE, BASELINE);
    let a = run(&s, 0.01, 42).expect("valid");
    let b = run(&s, 0.01, 42).expect("valid");
    let c = run(&s, 0.01, 43).expect("valid");
    assert_eq!(a, b);
    assert_ne!(a.shadow_requests, c.shadow_requests);
}
