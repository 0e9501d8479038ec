//! Always-valid sequential tests (mSPRT) for looking at every interval.
//!
//! A fixed-sample test run again at every look inflates its false-alarm rate far past its
//! alpha. A mixture sequential probability ratio test instead tracks a likelihood ratio
//! `Lambda_t` that, under "the shadow is not worse", is a nonnegative (super)martingale with
//! expectation at most 1; by Ville's inequality `P(Lambda_t >= 1/alpha for some t) <= alpha`,
//! however often one looks and whenever one stops. The always-valid p-value is
//! `min(1, 1 / max_s Lambda_s)`. Both tests are one-sided ("shadow worse").
//!
//! - [`ErrorRateSequential`]: exact, not asymptotic. In each interval, given both variants'
//!   requests and the interval's total errors, the shadow's share of the errors follows
//!   Fisher's noncentral hypergeometric distribution with odds ratio `psi` (central when the
//!   rates are equal). The interval's conditional likelihood ratio for `psi` against 1,
//!   multiplied over intervals and mixed over a half-normal prior on `ln psi > 0` (discretized
//!   to a proper prior on a grid, so the mixture is exactly a mixture of martingales), is the
//!   test. Assumes only that, within each interval, requests fail independently with a rate
//!   common to both variants under the null; the common rate may drift from interval to
//!   interval. It is exact at small counts: a zero-error primary with a failing shadow
//!   produces evidence from the first few shadow errors.
//! - [`LatencySequential`]: asymptotic. The Mann-Whitney effect `theta = P(shadow slower) - 1/2`
//!   (ties half), estimated from the cumulative histograms with the tie-corrected null variance
//!   `V`, is treated as `N(theta, V)` (the Johari et al. 2017 mSPRT with a plug-in variance)
//!   and mixed over a half-normal prior of scale `tau` on `theta > 0`. Assumes independent
//!   requests, latency distributions that do not change within a variant over the run, and
//!   enough samples for the normal approximation (hundreds per side); it is not exact at small
//!   counts, which the `min_samples` threshold guards.

use serde::Serialize;

use super::mann_whitney::rank_sums;
use super::quantiles::{common_bounds, total, validate};
use super::special::{ln_choose, log_sum_exp, norm_cdf};
use super::{Evidence, Inconclusive, StatsError, check_unit};
use crate::metrics::Histogram;
use super::proportions::Counts;

/// Grid points of the error-rate mixture.
const GRID: usize = 64;
/// The grid reaches this many prior scales.
const GRID_SPAN: f64 = 6.0;

/// Where a sequential test stands after the latest look.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SequentialResult {
    /// `ln Lambda` at the latest look.
    pub log_lr: f64,
    /// Always-valid p-value, `min(1, 1 / max Lambda)` over every look so far.
    pub p_value: f64,
    /// The alpha the boundary uses (`Lambda >= 1/alpha`).
    pub alpha: f64,
    /// True once the boundary has been crossed (it stays crossed).
    pub crossed: bool,
    /// The look (1-based) at which it first crossed.
    pub crossed_at: Option<u64>,
    /// Looks so far.
    pub looks: u64,
    /// The effect estimate on the test's scale: the cumulative error-rate ratio (shadow over
    /// primary) for errors, `P(shadow slower) - 1/2` for latency.
    pub effect: f64,
    /// Whether there is enough data to read the result.
    pub evidence: Evidence,
}

/// The running maximum of `ln Lambda` and the first crossing.
#[derive(Clone, Debug, PartialEq)]
struct Boundary {
    alpha: f64,
    max_log_lr: f64,
    looks: u64,
    crossed_at: Option<u64>,
}

impl Boundary {
    fn new(alpha: f64) -> Result<Self, StatsError> {
        Ok(Boundary {
            alpha: check_unit("alpha", alpha)?,
            max_log_lr: 0.0,
            looks: 0,
            crossed_at: None,
        })
    }

    fn look(&mut self, log_lr: f64) {
        self.looks += 1;
        if log_lr > self.max_log_lr {
            self.max_log_lr = log_lr;
        }
        if self.crossed_at.is_none() && log_lr >= -self.alpha.ln() {
            self.crossed_at = Some(self.looks);
        }
    }

    fn result(&self, log_lr: f64, effect: f64, evidence: Evidence) -> SequentialResult {
        SequentialResult {
            log_lr,
            p_value: (-self.max_log_lr).exp().min(1.0),
            alpha: self.alpha,
            crossed: self.crossed_at.is_some(),
            crossed_at: self.crossed_at,
            looks: self.looks,
            effect,
            evidence,
        }
    }
}

/// Settings of a sequential test.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SequentialConfig {
    /// The false-alarm rate to keep over the whole run, e.g. 0.01.
    pub alpha: f64,
    /// Scale of the half-normal mixing prior: `ln(odds ratio)` for errors (1.0 centres the
    /// prior's median near a doubling), the Mann-Whitney effect for latency (e.g. 0.05).
    pub tau: f64,
    /// Fewer requests (latency samples) than this on either side is inconclusive.
    pub min_samples: u64,
}

impl SequentialConfig {
    /// Defaults for the error-rate test at `alpha`.
    pub fn errors(alpha: f64) -> Self {
        SequentialConfig {
            alpha,
            tau: 1.0,
            min_samples: 100,
        }
    }

    /// Defaults for the latency test at `alpha`.
    pub fn latency(alpha: f64) -> Self {
        SequentialConfig {
            alpha,
            tau: 0.05,
            min_samples: 200,
        }
    }

    fn check_tau(&self) -> Result<f64, StatsError> {
        if self.tau > 0.0 && self.tau.is_finite() {
            Ok(self.tau)
        } else {
            Err(StatsError::BadParameter {
                name: "tau",
                value: self.tau,
                expected: "positive and finite",
            })
        }
    }
}

/// The exact conditional mSPRT for "the shadow's error rate is higher". Feed it every
/// interval's counts with [`ErrorRateSequential::observe`].
///
/// ```
/// use doppel_engine::stats::proportions::Counts;
/// use doppel_engine::stats::sequential::{ErrorRateSequential, SequentialConfig};
/// let mut test = ErrorRateSequential::new(SequentialConfig::errors(0.01)).unwrap();
/// for _ in 0..5 {
///     // The primary never fails; the shadow fails 2 of its 20 requests per interval.
///     test.observe(Counts::new(2000, 0), Counts::new(20, 2));
/// }
/// assert!(test.result().crossed);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorRateSequential {
    config: SequentialConfig,
    /// `ln psi` at each grid point.
    grid: Vec<f64>,
    /// `ln` prior weight plus the accumulated conditional log-likelihood ratio, per grid point.
    log_post: Vec<f64>,
    boundary: Boundary,
    primary: Counts,
    shadow: Counts,
}

impl ErrorRateSequential {
    /// A test that has seen nothing yet.
    pub fn new(config: SequentialConfig) -> Result<Self, StatsError> {
        let tau = config.check_tau()?;
        let step = GRID_SPAN * tau / GRID as f64;
        let grid: Vec<f64> = (0..GRID).map(|i| (i as f64 + 0.5) * step).collect();
        let raw: Vec<f64> = grid.iter().map(|g| -0.5 * (g / tau).powi(2)).collect();
        let norm = log_sum_exp(raw.iter().copied());
        Ok(ErrorRateSequential {
            config,
            grid,
            log_post: raw.iter().map(|r| r - norm).collect(),
            boundary: Boundary::new(config.alpha)?,
            primary: Counts::default(),
            shadow: Counts::default(),
        })
    }

    /// Adds one interval's counts (not cumulative) and looks.
    pub fn observe(&mut self, primary: Counts, shadow: Counts) -> Result<SequentialResult, StatsError> {
        if primary.errors > primary.requests || shadow.errors > shadow.requests {
            let (variant, c) = if primary.errors > primary.requests {
                ("primary", primary)
            } else {
                ("shadow", shadow)
            };
            return Err(StatsError::ErrorsExceedRequests {
                variant,
                errors: c.errors,
                requests: c.requests,
            });
        }
        self.primary.requests += primary.requests;
        self.primary.errors += primary.errors;
        self.shadow.requests += shadow.requests;
        self.shadow.errors += shadow.errors;
        self.update(primary, shadow);
        let log_lr = self.log_lr();
        self.boundary.look(log_lr);
        Ok(self.result())
    }

    /// Multiplies in the interval's conditional likelihood ratio at every grid point.
    fn update(&mut self, primary: Counts, shadow: Counts) {
        let (ns, np) = (shadow.requests, primary.requests);
        let errors = shadow.errors + primary.errors;
        if ns == 0 || np == 0 || errors == 0 || errors == ns + np {
            return; // the shadow's share of the errors is fixed: no information
        }
        let low = errors.saturating_sub(np);
        let high = errors.min(ns);
        let h: Vec<f64> = (low..=high)
            .map(|k| ln_choose(ns, k) + ln_choose(np, errors - k))
            .collect();
        let central = log_sum_exp(h.iter().copied());
        let top = h.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = h.iter().map(|hj| (hj - top).exp()).collect();
        let observed = shadow.errors as f64;
        for (g, post) in self.grid.iter().zip(self.log_post.iter_mut()) {
            *post += observed * g - log_tilted_sum(&h, &weights, top, low, *g) + central;
        }
    }

    fn log_lr(&self) -> f64 {
        log_sum_exp(self.log_post.iter().copied())
    }

    /// The test after the latest look.
    pub fn result(&self) -> SequentialResult {
        let min = self.config.min_samples;
        let evidence = if self.shadow.requests == 0 || self.primary.requests == 0 {
            Evidence::Inconclusive(Inconclusive::no_data(&format!(
                "primary has {} requests, shadow {}",
                self.primary.requests, self.shadow.requests
            )))
        } else if self.shadow.requests < min {
            Evidence::Inconclusive(Inconclusive::too_few("shadow", self.shadow.requests, min, "requests"))
        } else if self.primary.requests < min {
            Evidence::Inconclusive(Inconclusive::too_few("primary", self.primary.requests, min, "requests"))
        } else {
            Evidence::Sufficient
        };
        let effect = if self.primary.rate() > 0.0 {
            self.shadow.rate() / self.primary.rate()
        } else if self.shadow.errors > 0 {
            f64::INFINITY
        } else {
            1.0
        };
        self.boundary.result(self.log_lr(), effect, evidence)
    }

    /// The cumulative counts seen so far (primary, shadow).
    pub fn totals(&self) -> (Counts, Counts) {
        (self.primary, self.shadow)
    }
}

/// `ln sum_j exp(h[j] + (low + j) g)`, with `weights[j] = exp(h[j] - top)`: Horner's rule on
/// `exp(g)` when the powers cannot overflow (the common, short case), log-sum-exp otherwise.
fn log_tilted_sum(h: &[f64], weights: &[f64], top: f64, low: u64, g: f64) -> f64 {
    if (h.len() as f64) * g < 600.0 {
        let psi = g.exp();
        let poly = weights.iter().rev().fold(0.0, |acc, w| acc * psi + w);
        top + low as f64 * g + poly.ln()
    } else {
        log_sum_exp(h.iter().enumerate().map(|(j, hj)| hj + (low + j as u64) as f64 * g))
    }
}

/// The asymptotic mSPRT on the Mann-Whitney effect for "the shadow is slower". Feed it every
/// interval's histograms with [`LatencySequential::observe`]; it keeps the cumulative ones.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencySequential {
    config: SequentialConfig,
    boundary: Boundary,
    primary: Option<Histogram>,
    shadow: Option<Histogram>,
}

impl LatencySequential {
    /// A test that has seen nothing yet.
    pub fn new(config: SequentialConfig) -> Result<Self, StatsError> {
        config.check_tau()?;
        Ok(LatencySequential {
            config,
            boundary: Boundary::new(config.alpha)?,
            primary: None,
            shadow: None,
        })
    }

    /// Adds one interval's histograms (not cumulative) and looks, once both sides have the
    /// minimum sample.
    pub fn observe(&mut self, primary: &Histogram, shadow: &Histogram) -> Result<SequentialResult, StatsError> {
        validate(primary, "primary")?;
        validate(shadow, "shadow")?;
        self.primary = Some(accumulate(self.primary.take(), primary, "primary")?);
        self.shadow = Some(accumulate(self.shadow.take(), shadow, "shadow")?);
        let result = self.result()?;
        if result.evidence.is_sufficient() {
            // The normal approximation needs its minimum sample: no look before it.
            self.boundary.look(result.log_lr);
        }
        self.result()
    }

    /// `ln Lambda` and the effect estimate from the cumulative histograms.
    fn current(&self) -> Result<(f64, f64), StatsError> {
        let (Some(p), Some(s)) = (&self.primary, &self.shadow) else {
            return Ok((0.0, 0.0));
        };
        let (p, s) = common_bounds(p, s)?;
        let r = rank_sums(&s.counts, &p.counts);
        let pairs = r.n1 as f64 * r.n2 as f64;
        if pairs == 0.0 || r.variance <= 0.0 {
            return Ok((0.0, 0.0));
        }
        let theta = (r.u - r.mean) / pairs;
        let v = r.variance / (pairs * pairs);
        Ok((half_normal_mixture_log_lr(theta, v, self.config.tau), theta))
    }

    /// The test after the latest look.
    pub fn result(&self) -> Result<SequentialResult, StatsError> {
        let (log_lr, effect) = self.current()?;
        let n = |h: &Option<Histogram>| h.as_ref().map_or(0, total);
        let (np, ns) = (n(&self.primary), n(&self.shadow));
        let min = self.config.min_samples;
        let evidence = if np == 0 || ns == 0 {
            Evidence::Inconclusive(Inconclusive::no_data(&format!(
                "primary has {np} latency samples, shadow {ns}"
            )))
        } else if ns < min {
            Evidence::Inconclusive(Inconclusive::too_few("shadow", ns, min, "samples"))
        } else if np < min {
            Evidence::Inconclusive(Inconclusive::too_few("primary", np, min, "samples"))
        } else {
            Evidence::Sufficient
        };
        Ok(self.boundary.result(log_lr, effect, evidence))
    }
}

/// Adds `window` to the running histogram, coarsening to common bounds if they changed.
fn accumulate(
    acc: Option<Histogram>,
    window: &Histogram,
    variant: &'static str,
) -> Result<Histogram, StatsError> {
    let Some(acc) = acc else {
        return Ok(window.clone());
    };
    let (mut a, w) = if acc.bounds == window.bounds {
        (acc, window.clone())
    } else {
        common_bounds(&acc, window).map_err(|_| StatsError::BadHistogram {
            variant,
            reason: format!(
                "bounds changed between intervals to {:?}, none in common with {:?}",
                window.bounds, acc.bounds
            ),
        })?
    };
    for (c, w) in a.counts.iter_mut().zip(&w.counts) {
        *c += w;
    }
    a.sum += w.sum;
    Ok(a)
}

/// `ln` of the one-sided normal-mixture likelihood ratio for an estimate `theta ~ N(theta, v)`
/// mixed over a half-normal prior of scale `tau` on `theta > 0`:
/// `2 sqrt(v / (v + tau^2)) exp(theta^2 tau^2 / (2 v (v + tau^2))) Phi(m / s)` with
/// `m = theta tau^2 / (v + tau^2)` and `s^2 = v tau^2 / (v + tau^2)`.
pub fn half_normal_mixture_log_lr(theta: f64, v: f64, tau: f64) -> f64 {
    let t2 = tau * tau;
    let m = theta * t2 / (v + t2);
    let s = (v * t2 / (v + t2)).sqrt();
    std::f64::consts::LN_2 + 0.5 * (v / (v + t2)).ln() + theta * theta * t2 / (2.0 * v * (v + t2))
        + norm_cdf(m / s).max(1e-300).ln()
}
