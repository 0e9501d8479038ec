//! Inputs shared by the benchmarks: the example checkout policy and seeded, realistic traffic
//! (log-normal latency in Envoy's default buckets, as the detection benchmark simulates it).

use std::collections::BTreeMap;

use doppel_engine::metrics::{Histogram, ServiceWindow, VariantWindow};
use doppel_engine::policy::{Policy, parse};
use doppel_engine::stats::sim::{Interval, Scenario, Simulator, VariantModel};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `policies/checkout-split.yaml`: 7 rules over errors, latency, a custom metric, probes,
/// resources and the rollout.
pub const CHECKOUT: &str = include_str!("../../../policies/checkout-split.yaml");

/// The checkout policy, parsed and checked.
pub fn checkout() -> Policy {
    match parse(CHECKOUT) {
        Ok(policy) => policy,
        Err(problems) => panic!("policies/checkout-split.yaml: {problems:?}"),
    }
}

/// `policies/search-mirror.yaml`: 3 rules over the mirror comparison's counts.
pub const SEARCH_MIRROR: &str = include_str!("../../../policies/search-mirror.yaml");

/// The search mirror policy, parsed and checked.
pub fn search_mirror() -> Policy {
    match parse(SEARCH_MIRROR) {
        Ok(policy) => policy,
        Err(problems) => panic!("policies/search-mirror.yaml: {problems:?}"),
    }
}

/// The baseline: 1% errors, median 40 ms.
pub const PRIMARY: VariantModel = VariantModel {
    error_rate: 0.01,
    median_ms: 40.0,
    sigma: 0.6,
};

/// A slightly worse shadow: 1.5% errors, 10% slower.
pub const SHADOW: VariantModel = VariantModel {
    error_rate: 0.015,
    median_ms: 44.0,
    sigma: 0.6,
};

/// Traffic of `requests` per interval (both variants), `shadow_share` of it to the shadow.
pub fn simulator(requests: u64, shadow_share: f64) -> Simulator {
    Simulator::new(Scenario {
        name: format!("{requests}"),
        regression: true,
        requests_per_interval: requests,
        shadow_share,
        intervals: 1,
        primary: PRIMARY,
        shadow: SHADOW,
        latency: true,
    })
}

/// A seeded generator: every run of the benchmarks sees the same data.
pub fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(2026)
}

/// A simulated interval as the window the engine would hold, with a `db` custom histogram
/// (a fifth of the request latency) per variant.
pub fn window(interval: &Interval, start_ms: u64, length_ms: u64) -> ServiceWindow {
    let variant = |counts: doppel_engine::stats::proportions::Counts, latency: &Histogram| {
        let db = Histogram {
            bounds: latency.bounds.clone(),
            // Shifted two buckets down: database time is a part of the request's.
            counts: latency
                .counts
                .iter()
                .skip(2)
                .copied()
                .chain([0, 0])
                .collect(),
            sum: latency.sum / 5.0,
        };
        VariantWindow {
            requests: counts.requests,
            errors_5xx: counts.errors,
            resets: 0,
            latency_ms: latency.clone(),
            custom: BTreeMap::from([("db".to_owned(), db)]),
        }
    };
    ServiceWindow {
        service: "checkout".to_owned(),
        start_ms,
        end_ms: start_ms + length_ms,
        primary: variant(interval.primary, &interval.primary_latency),
        shadow: variant(interval.shadow, &interval.shadow_latency),
        mirror: Default::default(),
    }
}
