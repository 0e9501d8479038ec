//! Why a metric from Envoy was not taken into a window, with a stable short code per kind that
//! labels the rejection counters without exploding their cardinality.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::BoundsMismatch;

/// Why one metric (or one whole message) from an Envoy was ignored or rejected.
///
/// Ignored kinds ([`IngestError::is_ignorable`]) are the normal case for most of what Envoy
/// sends (its hundreds of stats doppel does not read); the others mean a broken or hostile peer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum IngestError {
    /// A metric name doppel does not read.
    #[error("metric {name:?} is not one doppel reads")]
    UnknownMetric {
        /// The metric family's name.
        name: String,
    },
    /// A per-cluster stat of a cluster the registry does not map to a service.
    #[error("cluster {cluster:?} of metric {name:?} is not mapped to a service")]
    UnmappedCluster {
        /// The metric family's name.
        name: String,
        /// The cluster.
        cluster: String,
    },
    /// A metric family without a name.
    #[error("metric family has no name")]
    MissingName,
    /// The family's type is not one the Prometheus data model defines.
    #[error("metric {name:?} has unknown type {value}")]
    UnknownType {
        /// The metric family's name.
        name: String,
        /// The raw enum value.
        value: i32,
    },
    /// A known metric of another type than doppel expects (a gauge named like a counter).
    #[error("metric {name:?} is a {found}, expected a {expected}")]
    WrongType {
        /// The metric family's name.
        name: String,
        /// What doppel expects.
        expected: &'static str,
        /// What the family says, or which value field it carries.
        found: &'static str,
    },
    /// The family's type says counter or histogram, but the metric carries no such value.
    #[error("metric {name:?} carries no {expected} value")]
    MissingValue {
        /// The metric family's name.
        name: String,
        /// The value expected.
        expected: &'static str,
    },
    /// A count or sum below zero.
    #[error("metric {name:?} has negative value {value}")]
    NegativeValue {
        /// The metric family's name.
        name: String,
        /// The value.
        value: f64,
    },
    /// A NaN or infinite value.
    #[error("metric {name:?} has non-finite value {value}")]
    NotFinite {
        /// The metric family's name.
        name: String,
        /// The value.
        value: f64,
    },
    /// A counter delta with a fractional part.
    #[error("metric {name:?} has fractional count {value}")]
    NotAnInteger {
        /// The metric family's name.
        name: String,
        /// The value.
        value: f64,
    },
    /// A count larger than any Envoy serves between two flushes.
    #[error("metric {name:?} has value {value}, above the limit {limit}")]
    TooLarge {
        /// The metric family's name.
        name: String,
        /// The value.
        value: f64,
        /// The largest value accepted.
        limit: f64,
    },
    /// A histogram whose buckets do not make sense: bounds not finite and strictly increasing,
    /// cumulative counts that decrease, or a sample count below the last bucket.
    #[error("histogram {name:?} is malformed: {reason}")]
    BadHistogram {
        /// The metric family's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A histogram kind doppel does not read (native or float buckets, too many buckets).
    #[error("histogram {name:?} is not supported: {reason}")]
    UnsupportedHistogram {
        /// The metric family's name.
        name: String,
        /// What is not supported.
        reason: &'static str,
    },
    /// A histogram whose bucket bounds differ from those already in the window.
    #[error("histogram {name:?} does not fit the window: {source}")]
    BucketMismatch {
        /// The metric family's name.
        name: String,
        /// The two sets of bounds.
        source: BoundsMismatch,
    },
    /// A per-cluster stat without a label it needs (`envoy.cluster_name`,
    /// `envoy.response_code_class`).
    #[error("metric {name:?} has no {label} label")]
    MissingLabel {
        /// The metric family's name.
        name: String,
        /// The label missing.
        label: &'static str,
    },
    /// A filter stat of a service judged on Envoy's cluster stats: reading both would count
    /// every request twice.
    #[error("metric {name:?} is superseded by the cluster stats of its service")]
    Superseded {
        /// The metric family's name.
        name: String,
    },
    /// A service name that cannot be one (`[a-z0-9_-]`, 1 to 64 characters).
    #[error("metric {name:?} names invalid service {service:?}")]
    InvalidService {
        /// The metric family's name.
        name: String,
        /// The service segment.
        service: String,
    },
    /// A new service past the store's limit.
    #[error("service {service:?} exceeds the limit of {limit} services")]
    TooManyServices {
        /// The service refused.
        service: String,
        /// The limit.
        limit: usize,
    },
    /// A new custom histogram past the per-variant limit.
    #[error("custom metric {metric:?} exceeds the limit of {limit} custom metrics per variant")]
    TooManyCustomMetrics {
        /// The custom metric refused.
        metric: String,
        /// The limit.
        limit: usize,
    },
    /// A new counter past the per-stream limit of cumulative baselines.
    #[error("counter {origin:?} exceeds the limit of {limit} counters per stream")]
    TooManyCounters {
        /// The counter refused.
        origin: String,
        /// The limit.
        limit: usize,
    },
    /// An update for a window older than every window the store keeps.
    #[error("service {service:?}: window at {start_ms} ms is older than every window kept")]
    StaleWindow {
        /// The service.
        service: String,
        /// The window's start, Unix milliseconds.
        start_ms: u64,
    },
    /// The first message of a stream without the node identifier.
    #[error("stream's first message carries no node identifier")]
    MissingNode,
    /// A message that could not be decoded or a stream that broke.
    #[error("stream failed: {message}")]
    Stream {
        /// The gRPC status message.
        message: String,
    },
}

impl IngestError {
    /// Every code, in a fixed order (for exporting the counters with zeroes).
    pub const CODES: [&'static str; 22] = [
        "unknown_metric",
        "unmapped_cluster",
        "missing_name",
        "unknown_type",
        "wrong_type",
        "missing_value",
        "negative_value",
        "not_finite",
        "not_an_integer",
        "too_large",
        "bad_histogram",
        "unsupported_histogram",
        "bucket_mismatch",
        "missing_label",
        "superseded",
        "invalid_service",
        "too_many_services",
        "too_many_custom_metrics",
        "missing_node",
        "stream_error",
        "stale_window",
        "too_many_counters",
    ];

    /// The stable short code of this kind, for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::UnknownMetric { .. } => "unknown_metric",
            IngestError::UnmappedCluster { .. } => "unmapped_cluster",
            IngestError::MissingName => "missing_name",
            IngestError::UnknownType { .. } => "unknown_type",
            IngestError::WrongType { .. } => "wrong_type",
            IngestError::MissingValue { .. } => "missing_value",
            IngestError::NegativeValue { .. } => "negative_value",
            IngestError::NotFinite { .. } => "not_finite",
            IngestError::NotAnInteger { .. } => "not_an_integer",
            IngestError::TooLarge { .. } => "too_large",
            IngestError::BadHistogram { .. } => "bad_histogram",
            IngestError::UnsupportedHistogram { .. } => "unsupported_histogram",
            IngestError::BucketMismatch { .. } => "bucket_mismatch",
            IngestError::MissingLabel { .. } => "missing_label",
            IngestError::Superseded { .. } => "superseded",
            IngestError::InvalidService { .. } => "invalid_service",
            IngestError::TooManyServices { .. } => "too_many_services",
            IngestError::TooManyCustomMetrics { .. } => "too_many_custom_metrics",
            IngestError::StaleWindow { .. } => "stale_window",
            IngestError::TooManyCounters { .. } => "too_many_counters",
            IngestError::MissingNode => "missing_node",
            IngestError::Stream { .. } => "stream_error",
        }
    }

    /// True for the kinds that are normal traffic (stats doppel does not read), logged at debug
    /// level only; every other kind is logged as a warning.
    pub fn is_ignorable(&self) -> bool {
        matches!(
            self,
            IngestError::UnknownMetric { .. }
                | IngestError::UnmappedCluster { .. }
                | IngestError::Superseded { .. }
        )
    }
}

/// How many messages arrived, how many metrics were accepted, and how many were ignored or
/// rejected, by code. Lock-free: every Envoy's stream counts hundreds of ignored metrics per
/// flush, and the streams must not queue on one lock for it.
#[derive(Debug, Default)]
pub struct Counts {
    messages: AtomicU64,
    accepted: AtomicU64,
    by_code: [AtomicU64; IngestError::CODES.len()],
}

/// Where `code` is in [`IngestError::CODES`].
fn code_index(code: &str) -> Option<usize> {
    IngestError::CODES.iter().position(|c| *c == code)
}

impl Counts {
    /// Counts one MetricsService message received.
    pub fn message(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
    }

    /// MetricsService messages received so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// Adds `n` accepted metrics.
    pub fn accept(&self, n: u64) {
        self.accepted.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `accepted` metrics and one rejection per code in `codes`.
    pub fn record(&self, accepted: u64, codes: impl IntoIterator<Item = &'static str>) {
        self.accept(accepted);
        // Most codes of a message are the same few: add them up before touching the counters.
        let mut tally = [0u64; IngestError::CODES.len()];
        for code in codes {
            if let Some(i) = code_index(code) {
                tally[i] += 1;
            }
        }
        for (counter, n) in self.by_code.iter().zip(tally) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Counts one rejection under `code`.
    pub fn reject(&self, code: &'static str) {
        if let Some(i) = code_index(code) {
            self.by_code[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Metrics accepted into windows so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Rejections so far by code (codes never seen are absent).
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        IngestError::CODES
            .iter()
            .zip(&self.by_code)
            .map(|(code, n)| (*code, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Rejections so far under one code.
    pub fn rejected_with(&self, code: &str) -> u64 {
        code_index(code).map_or(0, |i| self.by_code[i].load(Ordering::Relaxed))
    }
}
