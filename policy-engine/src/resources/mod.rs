//! Resource metrics from Prometheus: CPU, memory, I/O and any custom query, per variant.
//!
//! A policy's `resources:` section names a Prometheus server and the queries; each query is a
//! PromQL template filled in per variant (`{{variant}}`, `{{selector}}`, `{{window}}`).
//! [`PrometheusSource::sample`] runs them all as instant queries and returns, per variant, the
//! numbers by name: what the CEL context exposes as `primary.resources` and
//! `shadow.resources`.
//!
//! No data is never zero: an empty answer, an error, a timeout or an ambiguous answer leaves the
//! name out of [`VariantResources::values`] and says why in [`VariantResources::missing`], so a
//! rule can tell "the shadow uses no CPU" from "we do not know". Every query has a time limit,
//! so a hanging Prometheus cannot hold up a decision.
//!
//! - [`config`]: [`ResourcesConfig`], the built-in queries and template filling.
//! - [`prometheus`]: [`PrometheusSource`], the HTTP API client and answer parsing.

pub mod config;
#[cfg(feature = "runtime")]
pub mod prometheus;

use std::collections::BTreeMap;

use doppel_filter::names::Variant;
use serde::Serialize;

pub use config::{DEFAULT_QUERIES, ResourcesConfig, VariantNames};
#[cfg(feature = "runtime")]
pub use prometheus::PrometheusSource;

/// One variant's resource numbers, and why the others are missing.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VariantResources {
    /// Query name to value, for the queries that gave exactly one finite number.
    pub values: BTreeMap<String, f64>,
    /// Query name to the reason it gave no number.
    pub missing: BTreeMap<String, NoData>,
}

/// Both variants' resource numbers from one round of queries.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ResourceSample {
    /// The primary's.
    pub primary: VariantResources,
    /// The shadow's.
    pub shadow: VariantResources,
}

impl ResourceSample {
    /// The numbers of one variant.
    pub fn variant(&self, variant: Variant) -> &VariantResources {
        match variant {
            Variant::Primary => &self.primary,
            Variant::Shadow => &self.shadow,
        }
    }
}

/// Why a query gave no number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum NoData {
    /// The query matched no series.
    #[error("no series matched")]
    Empty,
    /// The query gave several series; aggregate it (for example with `sum`).
    #[error("{series} series matched (for example {example}); aggregate the query to one")]
    Ambiguous {
        /// How many.
        series: usize,
        /// The first one's labels.
        example: String,
    },
    /// The value was NaN or infinite (for example a rate over no samples).
    #[error("the value is {0}")]
    NotFinite(String),
    /// Prometheus refused or failed the query.
    #[error("Prometheus error {kind}: {message}")]
    QueryError {
        /// Prometheus' `errorType` (`bad_data`, `timeout`, `execution`, ...).
        kind: String,
        /// Prometheus' `error`.
        message: String,
    },
    /// The query did not finish in time.
    #[error("timed out")]
    Timeout,
    /// Prometheus could not be reached.
    #[error("Prometheus unreachable: {0}")]
    Unreachable(String),
    /// The answer was not what the API promises.
    #[error("unexpected answer: {0}")]
    BadResponse(String),
}

impl NoData {
    /// A stable short code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Ambiguous { .. } => "ambiguous",
            Self::NotFinite(_) => "not_finite",
            Self::QueryError { .. } => "query_error",
            Self::Timeout => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::BadResponse(_) => "bad_response",
        }
    }
}

/// What can go wrong setting up the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourcesError {
    /// The `resources:` config is invalid.
    #[error("invalid resources config: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("cannot build the Prometheus HTTP client: {0}")]
    Client(String),
}

impl ResourcesError {
    /// A stable short code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Client(_) => "client",
        }
    }
}
