//! The edge: MetricsService messages become domain [`Update`]s here and nowhere else.
//!
//! Two sources are read:
//! - the filter's metrics, named by [`doppel_filter::names`] (`wasmcustom.doppel.<service>.…`);
//! - Envoy's per-cluster stats, either tag-extracted (`cluster.upstream_rq_total` with the
//!   label `envoy.cluster_name`, as `emit_tags_as_labels: true` sends them) or plain
//!   (`cluster.<name>.upstream_rq_total`), mapped to (service, variant) by a [`ClusterRegistry`].
//!
//! Envoy's sink sends counters as deltas (`report_counters_as_deltas: true`) and histograms as
//! the *interval* statistics of the last flush (`ParentHistogram::intervalStatistics` in
//! `grpc_metrics_service_impl.cc`): bucket counts are cumulative across buckets (Prometheus
//! style, each bucket counts everything at or below its bound) but not across flushes. Both are
//! therefore per-flush amounts that add up across flushes and across Envoys, and no per-Envoy
//! baseline is needed: an Envoy that restarts simply starts again from zero deltas.

use doppel_filter::names::{self, Scope, Variant};
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::io::prometheus::client as prom;

use super::error::IngestError;
use super::registry::ClusterRegistry;
use crate::metrics::Histogram;

/// The largest count accepted in one metric of one flush: no Envoy serves 2^40 (about 10^12)
/// requests between two flushes, and anything below 2^53 stays exact in an `f64`.
pub const MAX_COUNT: u64 = 1 << 40;
/// The largest histogram sum accepted, in the metric's own unit.
pub const MAX_SUM: f64 = 1e18;
/// The most buckets a histogram may have (Envoy's default has 20).
pub const MAX_BUCKETS: usize = 64;

/// The label Envoy puts the cluster name in when it emits tags as labels.
pub const CLUSTER_LABEL: &str = "envoy.cluster_name";
/// The label Envoy puts the response code class (`"5"`) in.
pub const CODE_CLASS_LABEL: &str = "envoy.response_code_class";

/// Counts of the mirror comparison, one per [`crate::metrics::MirrorWindow`] field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorStat {
    /// Copies sent.
    Sent,
    /// Copies compared.
    Compared,
    /// Status class differed.
    MismatchStatus,
    /// Body digest differed.
    MismatchBody,
    /// Shadow too slow.
    MismatchLatency,
    /// Copies without an answer.
    Failed,
    /// Chosen requests not copied (method, body, in-flight cap).
    Skipped,
}

/// Which part of a service's window a metric adds to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// [`crate::metrics::VariantWindow::requests`].
    Requests(Variant),
    /// [`crate::metrics::VariantWindow::errors_5xx`].
    Errors5xx(Variant),
    /// [`crate::metrics::VariantWindow::resets`].
    Resets(Variant),
    /// [`crate::metrics::VariantWindow::latency_ms`].
    Latency(Variant),
    /// One of [`crate::metrics::VariantWindow::custom`], by name.
    Custom(Variant, String),
    /// One of the [`crate::metrics::MirrorWindow`] counts.
    Mirror(MirrorStat),
}

impl Field {
    /// Whether the field takes a counter (`false`) or a histogram (`true`).
    pub fn is_histogram(&self) -> bool {
        matches!(self, Field::Latency(_) | Field::Custom(..))
    }
}

/// What one metric adds to a window.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter's delta.
    Count(u64),
    /// A histogram's interval, in milliseconds.
    Histogram(Histogram),
}

/// One metric of one flush, in the engine's terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The service it belongs to.
    pub service: String,
    /// Where it goes in the service's window.
    pub field: Field,
    /// What it adds.
    pub value: Value,
}

/// One MetricsService message converted: what goes into windows, and what did not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flush {
    /// `node.id/node.cluster` of the sending Envoy, if this message carries the identifier.
    pub node: Option<String>,
    /// The metrics doppel reads.
    pub updates: Vec<Update>,
    /// Every metric not taken, with why.
    pub rejected: Vec<IngestError>,
}

impl Flush {
    /// Converts a whole message. One bad metric never spoils the others.
    pub fn from_message(message: StreamMetricsMessage, registry: &ClusterRegistry) -> Flush {
        let StreamMetricsMessage {
            identifier,
            envoy_metrics,
        } = message;
        let node = identifier
            .and_then(|identifier| identifier.node)
            .map(|node| {
                if node.cluster.is_empty() {
                    node.id
                } else {
                    format!("{}/{}", node.id, node.cluster)
                }
            });
        let mut flush = Flush {
            node,
            ..Flush::default()
        };
        for family in envoy_metrics {
            for result in convert_family(family, registry) {
                match result {
                    Ok(update) => flush.updates.push(update),
                    Err(error) => flush.rejected.push(error),
                }
            }
        }
        flush
    }
}

/// What a family's name says, before its metrics (and their labels) are read.
enum Known {
    /// A filter metric: the service is in the name.
    Filter { service: String, field: Field },
    /// A per-cluster stat: the cluster is in the name (plain) or in a label (tagged).
    Cluster {
        cluster: Option<String>,
        stat: ClusterStat,
    },
}

/// The per-cluster stats doppel reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClusterStat {
    Total,
    /// `upstream_rq_5xx` (plain form).
    Rq5xx,
    /// `upstream_rq_xx` (tagged form): the class is in a label.
    RqClass,
    Reset,
    Time,
}

impl ClusterStat {
    fn parse(stat: &str, tagged: bool) -> Option<ClusterStat> {
        Some(match stat {
            "upstream_rq_total" => ClusterStat::Total,
            "upstream_rq_5xx" if !tagged => ClusterStat::Rq5xx,
            "upstream_rq_xx" if tagged => ClusterStat::RqClass,
            // Requests that got no upstream answer. `upstream_rq_tx_reset` is left out: Envoy
            // also counts there the resets it makes itself after a timeout, already counted.
            "upstream_rq_timeout"
            | "upstream_rq_rx_reset"
            | "upstream_rq_pending_failure_eject" => ClusterStat::Reset,
            "upstream_rq_time" => ClusterStat::Time,
            _ => return None,
        })
    }
}

/// Converts every metric of one family; unknown names give a single ignorable error.
fn convert_family(
    family: prom::MetricFamily,
    registry: &ClusterRegistry,
) -> Vec<Result<Update, IngestError>> {
    let prom::MetricFamily {
        name,
        help: _,
        r#type,
        metric,
        unit: _,
    } = family;
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return vec![Err(IngestError::MissingName)];
    };
    let known = match classify(&name, registry) {
        Ok(known) => known,
        Err(error) => return vec![Err(error)],
    };
    // An absent type is the proto default, COUNTER.
    let family_type = match r#type
        .map(prom::MetricType::try_from)
        .unwrap_or(Ok(prom::MetricType::Counter))
    {
        Ok(t) => t,
        Err(_) => {
            return vec![Err(IngestError::UnknownType {
                name,
                value: r#type.unwrap_or_default(),
            })];
        }
    };
    metric
        .into_iter()
        .map(|metric| convert_metric(&name, &known, family_type, metric, registry))
        .collect()
}

fn classify(name: &str, registry: &ClusterRegistry) -> Result<Known, IngestError> {
    if let Some(parsed) = names::parse_metric(name) {
        let service = parsed.service;
        if !valid_service(service) {
            return Err(IngestError::InvalidService {
                name: name.to_owned(),
                service: service.to_owned(),
            });
        }
        let field = filter_field(parsed.scope, parsed.stat).ok_or_else(|| unknown(name))?;
        let per_request = matches!(
            field,
            Field::Requests(_) | Field::Errors5xx(_) | Field::Resets(_) | Field::Latency(_)
        );
        if per_request && registry.judges_by_cluster(service) {
            return Err(IngestError::Superseded {
                name: name.to_owned(),
            });
        }
        return Ok(Known::Filter {
            service: service.to_owned(),
            field,
        });
    }
    let rest = name.strip_prefix("cluster.").ok_or_else(|| unknown(name))?;
    if let Some(stat) = ClusterStat::parse(rest, true) {
        return Ok(Known::Cluster {
            cluster: None,
            stat,
        });
    }
    let (cluster, stat) = rest.rsplit_once('.').ok_or_else(|| unknown(name))?;
    let stat = ClusterStat::parse(stat, false).ok_or_else(|| unknown(name))?;
    Ok(Known::Cluster {
        cluster: Some(cluster.to_owned()),
        stat,
    })
}

fn unknown(name: &str) -> IngestError {
    IngestError::UnknownMetric {
        name: name.to_owned(),
    }
}

/// `[a-z0-9_-]`, 1 to 64 characters, as the filter's config requires.
fn valid_service(service: &str) -> bool {
    (1..=64).contains(&service.len())
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn filter_field(scope: Scope, stat: &str) -> Option<Field> {
    match scope {
        Scope::Variant(variant) => match stat {
            "rq_total" => Some(Field::Requests(variant)),
            "rq_5xx" => Some(Field::Errors5xx(variant)),
            "rq_reset" => Some(Field::Resets(variant)),
            "rq_time_us" => Some(Field::Latency(variant)),
            _ => {
                let custom = stat.strip_prefix("custom.")?.strip_suffix("_us")?;
                let valid = (1..=32).contains(&custom.len())
                    && custom
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                valid.then(|| Field::Custom(variant, custom.to_owned()))
            }
        },
        Scope::Mirror => Some(Field::Mirror(match stat {
            "sent" => MirrorStat::Sent,
            "compared" => MirrorStat::Compared,
            "mismatch_status" => MirrorStat::MismatchStatus,
            "mismatch_body" => MirrorStat::MismatchBody,
            "mismatch_latency" => MirrorStat::MismatchLatency,
            "failed" => MirrorStat::Failed,
            "skipped_method" | "skipped_body" | "dropped_in_flight" => MirrorStat::Skipped,
            _ => return None,
        })),
    }
}

fn convert_metric(
    name: &str,
    known: &Known,
    family_type: prom::MetricType,
    metric: prom::Metric,
    registry: &ClusterRegistry,
) -> Result<Update, IngestError> {
    let prom::Metric {
        label,
        gauge: _,
        counter,
        summary: _,
        untyped: _,
        histogram,
        // The engine buckets by its own clock: a peer's clock cannot move data in time.
        timestamp_ms: _,
    } = metric;
    let (service, field, scale) = match known {
        Known::Filter { service, field } => {
            // The filter's histograms are in microseconds; windows hold milliseconds.
            (service.clone(), field.clone(), 1e-3)
        }
        Known::Cluster { cluster, stat } => {
            let cluster = match cluster {
                Some(cluster) => cluster.as_str(),
                None => label_value(&label, CLUSTER_LABEL).ok_or(IngestError::MissingLabel {
                    name: name.to_owned(),
                    label: CLUSTER_LABEL,
                })?,
            };
            let (service, variant) =
                registry
                    .lookup(cluster)
                    .ok_or_else(|| IngestError::UnmappedCluster {
                        name: name.to_owned(),
                        cluster: cluster.to_owned(),
                    })?;
            let field = match stat {
                ClusterStat::Total => Field::Requests(variant),
                ClusterStat::Rq5xx => Field::Errors5xx(variant),
                ClusterStat::RqClass => match label_value(&label, CODE_CLASS_LABEL) {
                    Some("5") => Field::Errors5xx(variant),
                    Some(_) => return Err(unknown(name)),
                    None => {
                        return Err(IngestError::MissingLabel {
                            name: name.to_owned(),
                            label: CODE_CLASS_LABEL,
                        });
                    }
                },
                ClusterStat::Reset => Field::Resets(variant),
                ClusterStat::Time => Field::Latency(variant),
            };
            (service.to_owned(), field, 1.0)
        }
    };
    let value = if field.is_histogram() {
        if family_type != prom::MetricType::Histogram {
            return Err(wrong_type(name, "histogram", type_name(family_type)));
        }
        let histogram = histogram.ok_or_else(|| IngestError::MissingValue {
            name: name.to_owned(),
            expected: "histogram",
        })?;
        Value::Histogram(convert_histogram(name, histogram, scale)?)
    } else {
        if family_type != prom::MetricType::Counter {
            return Err(wrong_type(name, "counter", type_name(family_type)));
        }
        let counter = counter.ok_or_else(|| IngestError::MissingValue {
            name: name.to_owned(),
            expected: "counter",
        })?;
        let prom::Counter {
            value,
            exemplar: _,
            created_timestamp: _,
        } = counter;
        Value::Count(count(name, value.unwrap_or(0.0))?)
    };
    Ok(Update {
        service,
        field,
        value,
    })
}

fn wrong_type(name: &str, expected: &'static str, found: &'static str) -> IngestError {
    IngestError::WrongType {
        name: name.to_owned(),
        expected,
        found,
    }
}

fn type_name(t: prom::MetricType) -> &'static str {
    match t {
        prom::MetricType::Counter => "counter",
        prom::MetricType::Gauge => "gauge",
        prom::MetricType::Summary => "summary",
        prom::MetricType::Untyped => "untyped",
        prom::MetricType::Histogram => "histogram",
        prom::MetricType::GaugeHistogram => "gauge histogram",
    }
}

fn label_value<'a>(labels: &'a [prom::LabelPair], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|pair| pair.name.as_deref() == Some(key))
        .and_then(|pair| pair.value.as_deref())
}

/// A count from a float: finite, not negative, whole, at most [`MAX_COUNT`].
fn count(name: &str, value: f64) -> Result<u64, IngestError> {
    if !value.is_finite() {
        return Err(IngestError::NotFinite {
            name: name.to_owned(),
            value,
        });
    }
    if value < 0.0 {
        return Err(IngestError::NegativeValue {
            name: name.to_owned(),
            value,
        });
    }
    if value.fract() != 0.0 {
        return Err(IngestError::NotAnInteger {
            name: name.to_owned(),
            value,
        });
    }
    if value > MAX_COUNT as f64 {
        return Err(IngestError::TooLarge {
            name: name.to_owned(),
            value,
            limit: MAX_COUNT as f64,
        });
    }
    // Whole, finite and within [0, 2^40]: the cast is exact.
    Ok(value as u64)
}

/// Checks one histogram and turns its cumulative buckets into per-bucket counts, bounds and sum
/// multiplied by `scale`.
fn convert_histogram(
    name: &str,
    histogram: prom::Histogram,
    scale: f64,
) -> Result<Histogram, IngestError> {
    let prom::Histogram {
        sample_count,
        sample_count_float,
        sample_sum,
        bucket,
        created_timestamp: _,
        schema,
        zero_threshold: _,
        zero_count,
        zero_count_float,
        negative_span,
        negative_delta,
        negative_count,
        positive_span,
        positive_delta,
        positive_count,
        exemplars: _,
    } = histogram;
    let unsupported = |reason| IngestError::UnsupportedHistogram {
        name: name.to_owned(),
        reason,
    };
    let bad = |reason: String| IngestError::BadHistogram {
        name: name.to_owned(),
        reason,
    };
    let native = schema.is_some()
        || zero_count.is_some_and(|c| c > 0)
        || zero_count_float.is_some_and(|c| c > 0.0)
        || !negative_span.is_empty()
        || !negative_delta.is_empty()
        || !negative_count.is_empty()
        || !positive_span.is_empty()
        || !positive_delta.is_empty()
        || !positive_count.is_empty();
    if native {
        return Err(unsupported("native (sparse) buckets"));
    }
    if sample_count_float.is_some() {
        return Err(unsupported("float counts"));
    }
    if bucket.len() > MAX_BUCKETS {
        return Err(unsupported("more than 64 buckets"));
    }
    let total = sample_count.ok_or_else(|| IngestError::MissingValue {
        name: name.to_owned(),
        expected: "sample_count",
    })?;
    let total = count(name, total as f64)?;
    let sum = sample_sum.unwrap_or(0.0);
    if !sum.is_finite() {
        return Err(IngestError::NotFinite {
            name: name.to_owned(),
            value: sum,
        });
    }
    if sum < 0.0 {
        return Err(IngestError::NegativeValue {
            name: name.to_owned(),
            value: sum,
        });
    }
    if sum > MAX_SUM {
        return Err(IngestError::TooLarge {
            name: name.to_owned(),
            value: sum,
            limit: MAX_SUM,
        });
    }

    let mut bounds = Vec::with_capacity(bucket.len());
    let mut counts = Vec::with_capacity(bucket.len() + 1);
    let mut below = 0u64;
    let mut saw_infinity = false;
    for (i, b) in bucket.into_iter().enumerate() {
        if saw_infinity {
            return Err(bad(format!("bucket {i} follows the +Inf bucket")));
        }
        let prom::Bucket {
            cumulative_count,
            cumulative_count_float,
            upper_bound,
            exemplar: _,
        } = b;
        if cumulative_count_float.is_some() && cumulative_count.is_none() {
            return Err(unsupported("float counts"));
        }
        let bound = upper_bound.ok_or_else(|| bad(format!("bucket {i} has no upper bound")))?;
        let cumulative = cumulative_count.ok_or_else(|| bad(format!("bucket {i} has no count")))?;
        let cumulative = count(name, cumulative as f64)?;
        if cumulative < below {
            return Err(bad(format!(
                "bucket {i} counts {cumulative}, fewer than the {below} below it"
            )));
        }
        if bound == f64::INFINITY {
            // The Prometheus `+Inf` bucket: it must hold everything, and the overflow count
            // below says the same.
            if cumulative != total {
                return Err(bad(format!(
                    "+Inf bucket counts {cumulative}, sample count is {total}"
                )));
            }
            saw_infinity = true;
            continue;
        }
        if !bound.is_finite() {
            return Err(bad(format!("bucket {i} has bound {bound}")));
        }
        let scaled = bound * scale;
        if bounds.last().is_some_and(|last| *last >= scaled) {
            return Err(bad(format!("bucket {i} bound {bound} does not increase")));
        }
        bounds.push(scaled);
        counts.push(cumulative - below);
        below = cumulative;
    }
    if total < below {
        return Err(bad(format!(
            "sample count {total} is below the {below} in its buckets"
        )));
    }
    counts.push(total - below);
    Ok(Histogram {
        bounds,
        counts,
        sum: sum * scale,
    })
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
