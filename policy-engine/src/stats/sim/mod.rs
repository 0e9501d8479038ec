//! The detection benchmark's simulator: seeded primary/shadow traffic with a known truth,
//! cut into intervals the way ingestion cuts windows, and judged interval by interval as a
//! live engine would.
//!
//! - this file: the traffic model and one simulated run.
//! - [`judges`]: doppel's sequential tests and the two baselines (a Kayenta-style
//!   Mann-Whitney judge re-run every interval, an Argo-Rollouts-style threshold rule).
//! - [`bench`]: many runs per scenario, calibration, and the markdown table.
//!
//! Model: every interval has a fixed number of requests; each goes to the shadow with the
//! scenario's share; each fails independently with its variant's error rate; latencies are
//! log-normal and recorded in Envoy's default histogram buckets (counts drawn as a multinomial;
//! the sum uses each bucket's exact conditional mean, so the mean is right on average).

pub mod bench;
pub mod judges;

use rand::Rng;
use rand_distr::{Binomial, Distribution};

use super::proportions::Counts;
use super::special::norm_cdf;
use crate::metrics::Histogram;

/// Envoy's default histogram bucket bounds, in milliseconds.
pub const ENVOY_BOUNDS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
    30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// One variant's behaviour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VariantModel {
    /// Probability that a request fails.
    pub error_rate: f64,
    /// Median latency, milliseconds.
    pub median_ms: f64,
    /// Standard deviation of `ln(latency)`.
    pub sigma: f64,
}

impl VariantModel {
    /// Probability of each bucket of `bounds` (plus overflow) under this log-normal.
    fn bucket_probabilities(&self, bounds: &[f64]) -> Vec<f64> {
        let cdf = |b: f64| norm_cdf((b.ln() - self.median_ms.ln()) / self.sigma);
        let mut probs = Vec::with_capacity(bounds.len() + 1);
        let mut below = 0.0;
        for &b in bounds {
            let c = cdf(b);
            probs.push((c - below).max(0.0));
            below = c;
        }
        probs.push((1.0 - below).max(0.0));
        probs
    }

    /// Mean latency of the requests falling in each bucket (exact for the log-normal).
    fn bucket_means(&self, bounds: &[f64]) -> Vec<f64> {
        let (mu, s) = (self.median_ms.ln(), self.sigma);
        let mean = (mu + s * s / 2.0).exp();
        // E[X; X <= b] = mean * Phi((ln b - mu - s^2) / s)
        let partial = |b: f64| mean * norm_cdf((b.ln() - mu - s * s) / s);
        let probs = self.bucket_probabilities(bounds);
        let mut edges: Vec<f64> = vec![0.0];
        edges.extend(bounds.iter().map(|&b| partial(b)));
        edges.push(mean);
        probs
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                if p > 0.0 {
                    (edges[i + 1] - edges[i]) / p
                } else {
                    bounds.get(i).copied().unwrap_or(bounds[bounds.len() - 1])
                }
            })
            .collect()
    }

    /// The true mean latency.
    pub fn mean_ms(&self) -> f64 {
        (self.median_ms.ln() + self.sigma * self.sigma / 2.0).exp()
    }

    /// The true `q` quantile of latency.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        (self.median_ms.ln() + self.sigma * super::special::norm_ppf(q)).exp()
    }
}

/// A scenario: traffic, the two variants, and how long a run lasts.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Short name for the table.
    pub name: String,
    /// True when the shadow is worse (detection is right), false for A/A (any alarm is false).
    pub regression: bool,
    /// Requests per interval, both variants together.
    pub requests_per_interval: u64,
    /// Share of requests sent to the shadow, e.g. 0.01.
    pub shadow_share: f64,
    /// Intervals per run (looks).
    pub intervals: usize,
    /// The primary.
    pub primary: VariantModel,
    /// The shadow.
    pub shadow: VariantModel,
}

/// What a judge sees at the end of one interval (that interval's data only).
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// Primary requests and errors.
    pub primary: Counts,
    /// Shadow requests and errors.
    pub shadow: Counts,
    /// Primary latency.
    pub primary_latency: Histogram,
    /// Shadow latency.
    pub shadow_latency: Histogram,
}

/// Draws the intervals of one scenario, reusing the bucket model across intervals.
pub struct Simulator {
    scenario: Scenario,
    primary_probs: Vec<f64>,
    shadow_probs: Vec<f64>,
    primary_means: Vec<f64>,
    shadow_means: Vec<f64>,
}

impl Simulator {
    /// A simulator for `scenario`.
    pub fn new(scenario: Scenario) -> Self {
        let b = &ENVOY_BOUNDS_MS;
        Simulator {
            primary_probs: scenario.primary.bucket_probabilities(b),
            shadow_probs: scenario.shadow.bucket_probabilities(b),
            primary_means: scenario.primary.bucket_means(b),
            shadow_means: scenario.shadow.bucket_means(b),
            scenario,
        }
    }

    /// The scenario simulated.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// One interval of traffic.
    pub fn interval<R: Rng>(&self, rng: &mut R) -> Interval {
        let s = &self.scenario;
        let shadow_n = binomial(rng, s.requests_per_interval, s.shadow_share);
        let primary_n = s.requests_per_interval - shadow_n;
        Interval {
            primary: Counts::new(primary_n, binomial(rng, primary_n, s.primary.error_rate)),
            shadow: Counts::new(shadow_n, binomial(rng, shadow_n, s.shadow.error_rate)),
            primary_latency: histogram(rng, primary_n, &self.primary_probs, &self.primary_means),
            shadow_latency: histogram(rng, shadow_n, &self.shadow_probs, &self.shadow_means),
        }
    }
}

/// A binomial draw (0 when `p` is 0 or `n` is 0).
fn binomial<R: Rng>(rng: &mut R, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    Binomial::new(n, p).map_or(0, |d| d.sample(rng))
}

/// `n` observations spread over buckets as a multinomial (conditional binomials).
fn histogram<R: Rng>(rng: &mut R, n: u64, probs: &[f64], means: &[f64]) -> Histogram {
    let mut counts = vec![0u64; probs.len()];
    let mut left = n;
    let mut mass = 1.0;
    let last = probs.len() - 1;
    for (i, &p) in probs.iter().enumerate() {
        if left == 0 {
            break;
        }
        let c = if i == last || mass <= p {
            left
        } else {
            binomial(rng, left, (p / mass).clamp(0.0, 1.0))
        };
        counts[i] = c;
        left -= c;
        mass -= p;
    }
    let sum = counts.iter().zip(means).map(|(&c, m)| c as f64 * m).sum();
    Histogram {
        bounds: ENVOY_BOUNDS_MS.to_vec(),
        counts,
        sum,
    }
}
