//! Error rates: is the shadow's error rate higher than the primary's?
//!
//! The test is Fisher's exact test on the 2x2 table (shadow, primary) x (error, ok),
//! conditioned on its margins, so it stays exact at any count: a primary with zero errors and a
//! shadow with 3 errors in 20 requests gives a small p-value, not a division by zero. Only when
//! every margin of the table exceeds [`EXACT_LIMIT`] (then every expected cell count is in the
//! tens at least and the hypergeometric sum would be long) does it switch to the pooled
//! two-proportion z test, which then agrees with the exact test to a few parts in a thousand.

use serde::Serialize;

use super::special::{ln_choose, log_sum_exp, norm_ppf, norm_sf};
use super::{Evidence, Inconclusive, Interval, StatsError, check_unit};

/// Above this smallest margin the z test replaces Fisher's exact test.
pub const EXACT_LIMIT: u64 = 100_000;

/// One variant's request and error counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Requests answered.
    pub requests: u64,
    /// Of those, errors.
    pub errors: u64,
}

impl Counts {
    /// Counts from requests and errors.
    pub fn new(requests: u64, errors: u64) -> Self {
        Counts { requests, errors }
    }

    /// The error rate, 0 when there are no requests.
    pub fn rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    fn check(&self, variant: &'static str) -> Result<(), StatsError> {
        if self.errors > self.requests {
            Err(StatsError::ErrorsExceedRequests {
                variant,
                errors: self.errors,
                requests: self.requests,
            })
        } else {
            Ok(())
        }
    }
}

/// Settings of the error-rate comparison.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ErrorRateConfig {
    /// Fewer requests than this on either side is inconclusive.
    pub min_requests: u64,
    /// Confidence level of the intervals, e.g. 0.95.
    pub confidence: f64,
}

impl Default for ErrorRateConfig {
    fn default() -> Self {
        ErrorRateConfig {
            min_requests: 100,
            confidence: 0.95,
        }
    }
}

/// Which test produced the p-values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProportionTest {
    /// Fisher's exact test (conditional on the margins).
    FisherExact,
    /// Pooled two-proportion z test, used only beyond [`EXACT_LIMIT`].
    NormalApprox,
}

/// The comparison of the shadow's error rate with the primary's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorRateComparison {
    /// The primary's error rate.
    pub primary_rate: f64,
    /// The shadow's error rate.
    pub shadow_rate: f64,
    /// The test behind the p-values.
    pub test: ProportionTest,
    /// The pooled two-proportion z score (shadow minus primary), for reading; the p-values
    /// come from `test`.
    pub statistic: f64,
    /// One-sided p-value for "the shadow has a higher error rate".
    pub p_worse: f64,
    /// Two-sided p-value for "the rates differ".
    pub p_two_sided: f64,
    /// Shadow rate minus primary rate, with Newcombe's hybrid score interval.
    pub difference: Interval,
    /// Shadow rate over primary rate, with the Katz log interval (0.5 added to every count
    /// when an error count is zero); `None` when neither side has errors.
    pub ratio: Option<Interval>,
    /// Whether the counts suffice.
    pub evidence: Evidence,
}

/// Compares error rates: Fisher's exact test, effect sizes and sufficiency.
///
/// ```
/// use doppel_engine::stats::proportions::{compare_error_rates, Counts, ErrorRateConfig};
/// // A primary without errors does not hide a failing shadow.
/// let r = compare_error_rates(Counts::new(2000, 0), Counts::new(40, 4), &ErrorRateConfig { min_requests: 20, confidence: 0.95 }).unwrap();
/// assert!(r.p_worse < 1e-5 && r.evidence.is_sufficient());
/// ```
pub fn compare_error_rates(
    primary: Counts,
    shadow: Counts,
    config: &ErrorRateConfig,
) -> Result<ErrorRateComparison, StatsError> {
    primary.check("primary")?;
    shadow.check("shadow")?;
    let confidence = check_unit("confidence", config.confidence)?;
    let z = norm_ppf(1.0 - (1.0 - confidence) / 2.0);

    let evidence = if primary.requests == 0 || shadow.requests == 0 {
        Evidence::Inconclusive(Inconclusive::no_data(&format!(
            "primary has {} requests, shadow {}",
            primary.requests, shadow.requests
        )))
    } else if shadow.requests < config.min_requests {
        Evidence::Inconclusive(Inconclusive::too_few(
            "shadow",
            shadow.requests,
            config.min_requests,
            "requests",
        ))
    } else if primary.requests < config.min_requests {
        Evidence::Inconclusive(Inconclusive::too_few(
            "primary",
            primary.requests,
            config.min_requests,
            "requests",
        ))
    } else {
        Evidence::Sufficient
    };

    let statistic = pooled_z(primary, shadow);
    let table = Table::new(primary, shadow);
    let (test, p_worse, p_two_sided) = if table.smallest_margin() > EXACT_LIMIT {
        let p = norm_sf(statistic);
        (
            ProportionTest::NormalApprox,
            p,
            (2.0 * norm_sf(statistic.abs())).min(1.0),
        )
    } else {
        let (worse, two) = table.fisher();
        (ProportionTest::FisherExact, worse, two)
    };

    Ok(ErrorRateComparison {
        primary_rate: primary.rate(),
        shadow_rate: shadow.rate(),
        test,
        statistic,
        p_worse,
        p_two_sided,
        difference: newcombe_difference(shadow, primary, z),
        ratio: katz_ratio(shadow, primary, z),
        evidence,
    })
}

/// The pooled two-proportion z score, 0 when it is undefined (no requests, no errors at all).
pub fn pooled_z(primary: Counts, shadow: Counts) -> f64 {
    let n = (primary.requests + shadow.requests) as f64;
    if primary.requests == 0 || shadow.requests == 0 {
        return 0.0;
    }
    let pooled = (primary.errors + shadow.errors) as f64 / n;
    let var = pooled * (1.0 - pooled) * (1.0 / shadow.requests as f64 + 1.0 / primary.requests as f64);
    if var <= 0.0 {
        return 0.0;
    }
    (shadow.rate() - primary.rate()) / var.sqrt()
}

/// The 2x2 table with the shadow's error count as the random cell.
struct Table {
    /// Shadow requests (first row total).
    shadow_n: u64,
    /// Primary requests (second row total).
    primary_n: u64,
    /// All errors (first column total).
    errors: u64,
    /// The shadow's errors.
    observed: u64,
}

impl Table {
    fn new(primary: Counts, shadow: Counts) -> Self {
        Table {
            shadow_n: shadow.requests,
            primary_n: primary.requests,
            errors: primary.errors + shadow.errors,
            observed: shadow.errors,
        }
    }

    fn smallest_margin(&self) -> u64 {
        let total = self.shadow_n + self.primary_n;
        self.shadow_n
            .min(self.primary_n)
            .min(self.errors)
            .min(total - self.errors)
    }

    /// Log of the hypergeometric probability that the shadow holds `k` of the errors.
    fn ln_pmf(&self, k: u64) -> f64 {
        ln_choose(self.shadow_n, k) + ln_choose(self.primary_n, self.errors - k)
            - ln_choose(self.shadow_n + self.primary_n, self.errors)
    }

    /// Fisher's exact p-values: one-sided "shadow has more errors" and two-sided (the sum of
    /// the tables no more likely than the observed one, with scipy's relative tolerance 1e-7).
    fn fisher(&self) -> (f64, f64) {
        let low = self.errors.saturating_sub(self.primary_n);
        let high = self.errors.min(self.shadow_n);
        if low == high {
            return (1.0, 1.0);
        }
        let observed = self.ln_pmf(self.observed);
        let cutoff = observed + (1e-7f64).ln_1p();
        let upper = (self.observed..=high).map(|k| self.ln_pmf(k));
        let as_likely = (low..=high)
            .map(|k| self.ln_pmf(k))
            .filter(|&l| l <= cutoff);
        let clamp = |lp: f64| lp.exp().clamp(0.0, 1.0);
        (clamp(log_sum_exp(upper)), clamp(log_sum_exp(as_likely)))
    }
}

/// Wilson's score interval for one proportion.
pub fn wilson(c: Counts, z: f64) -> (f64, f64) {
    if c.requests == 0 {
        return (0.0, 1.0);
    }
    let n = c.requests as f64;
    let p = c.rate();
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Newcombe's hybrid score interval (his method 10) for `a.rate() - b.rate()`.
fn newcombe_difference(a: Counts, b: Counts, z: f64) -> Interval {
    let (pa, pb) = (a.rate(), b.rate());
    let (la, ua) = wilson(a, z);
    let (lb, ub) = wilson(b, z);
    let d = pa - pb;
    Interval {
        estimate: d,
        lower: d - ((pa - la).powi(2) + (ub - pb).powi(2)).sqrt(),
        upper: d + ((ua - pa).powi(2) + (pb - lb).powi(2)).sqrt(),
    }
}

/// The Katz log interval for `a.rate() / b.rate()`.
fn katz_ratio(a: Counts, b: Counts, z: f64) -> Option<Interval> {
    if a.requests == 0 || b.requests == 0 || (a.errors == 0 && b.errors == 0) {
        return None;
    }
    let fix = if a.errors == 0 || b.errors == 0 { 0.5 } else { 0.0 };
    let (xa, na) = (a.errors as f64 + fix, a.requests as f64 + fix);
    let (xb, nb) = (b.errors as f64 + fix, b.requests as f64 + fix);
    let ln_ratio = (xa / na).ln() - (xb / nb).ln();
    let se = (1.0 / xa - 1.0 / na + 1.0 / xb - 1.0 / nb).max(0.0).sqrt();
    Some(Interval {
        estimate: ln_ratio.exp(),
        lower: (ln_ratio - z * se).exp(),
        upper: (ln_ratio + z * se).exp(),
    })
}
