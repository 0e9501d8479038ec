//! The edge: MetricsService messages become domain [`Update`]s here and nowhere else.
//!
//! Two sources are read:
//! - the filter's metrics, named by [`doppel_filter::names`] (`wasmcustom.doppel.<service>.…`);
//! - Envoy's per-cluster stats, either tag-extracted (`cluster.upstream_rq_total` with the
//!   label `envoy.cluster_name`, as `emit_tags_as_labels: true` sends them) or plain
//!   (`cluster.<name>.upstream_rq_total`), mapped to (service, variant) by a [`ClusterRegistry`].
//!
//! Envoy's sink sends, once per flush, every stat used at least once: counters as deltas
//! (`report_counters_as_deltas: true`, doppel's config) and histograms as the *interval*
//! statistics of the last flush (`ParentHistogram::intervalStatistics` in
//! `grpc_metrics_service_impl.cc`, whatever the counter setting): bucket counts are cumulative
//! across buckets (Prometheus style, each bucket counts everything at or below its bound) but
//! not across flushes. Both are per-flush amounts that add up across flushes and across Envoys
//! with no per-Envoy state; an Envoy that restarts starts again from zero deltas. Cumulative
//! counters (Envoy's default) are turned into deltas per stream in [`super::stream`].

use doppel_filter::names::{self, Scope, Variant};
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::io::prometheus::client as prom;

use super::error::IngestError;
use super::registry::ClusterRegistry;
use super::values::{convert_histogram, count};
use crate::metrics::Histogram;

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
    /// The metric's name and sorted labels: what identifies it within one Envoy's stream.
    pub origin: String,
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

/// True when a family named `name` may hold a metric doppel reads; false when its name alone
/// makes it `unknown_metric` (so [`super::raw`] need not decode it).
pub fn may_read(name: &str) -> bool {
    if names::parse_metric(name).is_some() {
        return true;
    }
    let Some(rest) = name.strip_prefix("cluster.") else {
        return false;
    };
    ClusterStat::parse(rest, true).is_some()
        || rest
            .rsplit_once('.')
            .is_some_and(|(_, stat)| ClusterStat::parse(stat, false).is_some())
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
        origin: origin(name, &label),
    })
}

/// `name{key=value,...}` with the labels sorted, so one metric always gets one key.
fn origin(name: &str, labels: &[prom::LabelPair]) -> String {
    let mut pairs: Vec<_> = labels
        .iter()
        .map(|pair| {
            (
                pair.name.as_deref().unwrap_or_default(),
                pair.value.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    pairs.sort_unstable();
    let labels: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", labels.join(","))
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

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
