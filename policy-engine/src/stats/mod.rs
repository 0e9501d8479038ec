//! doppel's statistics: pure functions, no I/O, comparing a shadow with its primary.
//!
//! - [`proportions`]: error rates, Fisher's exact test (normal approximation only for very
//!   large tables), difference and ratio with confidence intervals.
//! - [`mann_whitney`]: Mann-Whitney U on bucketed latency histograms, tie-corrected, with
//!   effect sizes (common-language, rank-biserial, Hodges-Lehmann shift).
//! - [`quantiles`]: p50/p90/p95/p99 and mean from a histogram; putting two histograms on common
//!   bounds.
//! - [`sequential`]: always-valid (mSPRT) tests for monitoring every interval.
//! - [`special`]: normal distribution, log-gamma, log-sum-exp.
//! - [`sim`]: the seeded traffic simulator and judges of the detection benchmark.
//!
//! Every comparison says whether its data suffices ([`Evidence`]): too little data is
//! [`Evidence::Inconclusive`], never a pass. The shadow is always the first, "treatment" side:
//! a positive difference or an effect above 0.5 means the shadow is worse (more errors, slower).

pub mod mann_whitney;
pub mod proportions;
pub mod quantiles;
pub mod sequential;
pub mod sim;
pub mod special;

use serde::Serialize;

/// Whether a comparison had enough data to mean anything.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Evidence {
    /// Enough data: the p-values and effect sizes can be acted on.
    Sufficient,
    /// Too little (or no) data: the numbers are shown but must not decide anything.
    Inconclusive(Inconclusive),
}

impl Evidence {
    /// True when the data suffices.
    pub fn is_sufficient(&self) -> bool {
        matches!(self, Evidence::Sufficient)
    }
}

/// Why a comparison is inconclusive.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Inconclusive {
    /// A stable short code: `no_data` or `too_few`.
    pub code: &'static str,
    /// A sentence with the numbers.
    pub reason: String,
}

impl Inconclusive {
    /// A side has no observations at all.
    pub fn no_data(what: &str) -> Self {
        Inconclusive {
            code: "no_data",
            reason: format!("no data: {what}"),
        }
    }

    /// A side has fewer observations than the configured minimum.
    pub fn too_few(variant: &str, have: u64, need: u64, unit: &str) -> Self {
        Inconclusive {
            code: "too_few",
            reason: format!("{variant} has {have} {unit}, fewer than the minimum of {need}"),
        }
    }
}

/// An estimate with a two-sided confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    /// The point estimate.
    pub estimate: f64,
    /// Lower confidence limit.
    pub lower: f64,
    /// Upper confidence limit.
    pub upper: f64,
}

/// Input the statistics refuse, naming what is wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// More errors than requests, for the named variant.
    #[error("{variant}: {errors} errors out of {requests} requests")]
    ErrorsExceedRequests {
        /// Which side.
        variant: &'static str,
        /// Its errors.
        errors: u64,
        /// Its requests.
        requests: u64,
    },
    /// A histogram whose shape is wrong (bounds not increasing, counts length).
    #[error("{variant} histogram: {reason}")]
    BadHistogram {
        /// Which side.
        variant: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Two histograms that cannot be put on common bucket bounds.
    #[error("histograms share no bucket bound (primary {primary:?}, shadow {shadow:?})")]
    NoCommonBounds {
        /// The primary's bounds.
        primary: Vec<f64>,
        /// The shadow's bounds.
        shadow: Vec<f64>,
    },
    /// A parameter out of its range.
    #[error("{name} = {value} is out of range ({expected})")]
    BadParameter {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The allowed range.
        expected: &'static str,
    },
}

impl StatsError {
    /// A stable short code for logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            StatsError::ErrorsExceedRequests { .. } => "errors_exceed_requests",
            StatsError::BadHistogram { .. } => "bad_histogram",
            StatsError::NoCommonBounds { .. } => "no_common_bounds",
            StatsError::BadParameter { .. } => "bad_parameter",
        }
    }
}

/// Checks that `value` lies strictly between 0 and 1 (an alpha or a confidence level).
pub(crate) fn check_unit(name: &'static str, value: f64) -> Result<f64, StatsError> {
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(StatsError::BadParameter {
            name,
            value,
            expected: "strictly between 0 and 1",
        })
    }
}
