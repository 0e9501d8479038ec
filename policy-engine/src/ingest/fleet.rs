//! A simulated Envoy fleet's MetricsService traffic: what the ingestion load benchmark
//! (`examples/ingest_load.rs`, BENCHMARKS.md) streams into the engine, and what the tests that
//! guard its checks feed.
//!
//! Every simulated Envoy has the same configuration, as in a real fleet: the `checkout`
//! service's two clusters ([`PRIMARY_CLUSTER`], [`SHADOW_CLUSTER`], judged on Envoy's cluster
//! stats: see [`registry`]), four clusters doppel does not know, two listeners and their HTTP
//! connection managers, the server's, cluster manager's, runtime's and Wasm runtime's own stats,
//! and the doppel filter's metrics for `checkout` (split; its request stats are superseded by
//! the cluster stats, its custom `db` histogram is read) and for [`FILTER_SERVICE`] (mirror;
//! judged on the filter's stats). A [`flush`] is one message as Envoy 1.40 sends it with
//! doppel's sink config (`emit_tags_as_labels: true`, counters as deltas, histograms with
//! Envoy's default buckets and no `+Inf` bucket): one family per stat, 412 families of which 31
//! are histograms. [`Flush::expected`] is what the engine must add to its windows for it.
//!
//! Values are drawn from a seed, so the same seed gives the same message.

use doppel_filter::names::{self, Scope, Variant};
use envoy_types::pb::envoy::config::core::v3::{Extension, Node};
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::envoy::service::metrics::v3::stream_metrics_message::Identifier;
use envoy_types::pb::io::prometheus::client as prom;

use super::convert::{CLUSTER_LABEL, CODE_CLASS_LABEL};
use super::registry::ClusterRegistry;
use super::wire::{counter, gauge, histogram};

/// The service judged on Envoy's cluster stats.
pub const SERVICE: &str = "checkout";
/// Its primary's cluster.
pub const PRIMARY_CLUSTER: &str = "checkout-v1";
/// Its shadow's cluster.
pub const SHADOW_CLUSTER: &str = "checkout-v2";
/// The service judged on the filter's own stats (mirror mode).
pub const FILTER_SERVICE: &str = "search";

/// Clusters every Envoy has that doppel does not map to a service.
const OTHER_CLUSTERS: [&str; 4] = ["payments", "inventory", "auth", "doppel_engine"];
/// Listener addresses (`envoy.listener_address`).
const LISTENERS: [&str; 2] = ["0.0.0.0_10000", "0.0.0.0_10001"];
/// HTTP connection manager prefixes (`envoy.http_conn_manager_prefix`).
const CONNECTION_MANAGERS: [&str; 2] = ["ingress_http", "internal_http"];

/// Envoy's default histogram bucket bounds (`stats_config.histogram_bucket_settings` unset).
pub const DEFAULT_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

const CLUSTER_COUNTERS: [&str; 23] = [
    "upstream_cx_total",
    "upstream_cx_http1_total",
    "upstream_cx_http2_total",
    "upstream_cx_connect_fail",
    "upstream_cx_destroy",
    "upstream_cx_destroy_local",
    "upstream_cx_destroy_remote",
    "upstream_cx_rx_bytes_total",
    "upstream_cx_tx_bytes_total",
    "upstream_cx_close_notify",
    "upstream_rq_completed",
    "upstream_rq_pending_total",
    "upstream_rq_tx_reset",
    "upstream_rq_retry",
    "upstream_rq_retry_success",
    "membership_change",
    "update_attempt",
    "update_success",
    "update_no_rebuild",
    "lb_healthy_panic",
    "assignment_stale",
    "upstream_flow_control_paused_reading_total",
    "upstream_flow_control_resumed_reading_total",
];
const CLUSTER_GAUGES: [&str; 11] = [
    "upstream_cx_active",
    "upstream_rq_active",
    "upstream_rq_pending_active",
    "upstream_cx_rx_bytes_buffered",
    "upstream_cx_tx_bytes_buffered",
    "membership_healthy",
    "membership_degraded",
    "membership_total",
    "membership_excluded",
    "max_host_weight",
    "version",
];
const LISTENER_COUNTERS: [&str; 5] = [
    "listener.downstream_cx_total",
    "listener.downstream_cx_destroy",
    "listener.downstream_pre_cx_timeout",
    "listener.downstream_cx_overflow",
    "listener.no_filter_chain_match",
];
const CONNECTION_MANAGER_COUNTERS: [&str; 12] = [
    "http.downstream_rq_total",
    "http.downstream_cx_total",
    "http.downstream_cx_http1_total",
    "http.downstream_cx_http2_total",
    "http.downstream_cx_destroy",
    "http.downstream_cx_rx_bytes_total",
    "http.downstream_cx_tx_bytes_total",
    "http.downstream_rq_http1_total",
    "http.downstream_rq_http2_total",
    "http.downstream_rq_completed",
    "http.rs_too_large",
    "http.downstream_rq_timeout",
];
const CONNECTION_MANAGER_GAUGES: [&str; 4] = [
    "http.downstream_cx_active",
    "http.downstream_rq_active",
    "http.downstream_cx_rx_bytes_buffered",
    "http.downstream_cx_tx_bytes_buffered",
];
const SERVER_GAUGES: [&str; 21] = [
    "server.uptime",
    "server.memory_allocated",
    "server.memory_heap_size",
    "server.memory_physical_size",
    "server.live",
    "server.state",
    "server.concurrency",
    "server.total_connections",
    "server.parent_connections",
    "server.hot_restart_epoch",
    "server.version",
    "server.days_until_first_cert_expiring",
    "server.stats_recent_lookups",
    "cluster_manager.active_clusters",
    "cluster_manager.warming_clusters",
    "runtime.num_keys",
    "runtime.num_layers",
    "runtime.admin_overrides_active",
    "wasm.envoy.wasm.runtime.v8.active",
    "listener_manager.total_listeners_active",
    "listener_manager.total_listeners_warming",
];
const SERVER_COUNTERS: [&str; 15] = [
    "server.debug_assertion_failures",
    "server.envoy_bug_failures",
    "server.dynamic_unknown_fields",
    "server.static_unknown_fields",
    "server.main_thread.watchdog_miss",
    "server.worker_0.watchdog_miss",
    "cluster_manager.cluster_added",
    "cluster_manager.cluster_modified",
    "cluster_manager.cluster_removed",
    "cluster_manager.cluster_updated",
    "cluster_manager.cds.update_attempt",
    "cluster_manager.cds.update_success",
    "runtime.load_success",
    "runtime.load_error",
    "wasm.envoy.wasm.runtime.v8.created",
];
const MIRROR_STATS: [&str; 9] = [
    "sent",
    "compared",
    "mismatch_status",
    "mismatch_body",
    "mismatch_latency",
    "failed",
    "skipped_method",
    "skipped_body",
    "dropped_in_flight",
];

/// What the engine must take from one flush (or, added up, from many): per variant, primary
/// first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// `checkout`'s requests (cluster `upstream_rq_total`).
    pub requests: [u64; 2],
    /// `checkout`'s 5xx answers (cluster `upstream_rq_xx`, class 5).
    pub errors_5xx: [u64; 2],
    /// `checkout`'s resets (cluster timeouts, resets, pending failure ejections).
    pub resets: [u64; 2],
    /// `checkout`'s latency samples (cluster `upstream_rq_time`).
    pub latency_samples: [u64; 2],
    /// `checkout`'s custom `db` histogram samples (the filter's).
    pub db_samples: [u64; 2],
    /// [`FILTER_SERVICE`]'s requests (the filter's `rq_total`).
    pub filter_requests: [u64; 2],
    /// [`FILTER_SERVICE`]'s mirror copies sent.
    pub mirror_sent: u64,
    /// Metrics the engine adds into windows.
    pub accepted: u64,
    /// Metric families in the message(s).
    pub families: u64,
}

impl Expected {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Expected) {
        for i in 0..2 {
            self.requests[i] += other.requests[i];
            self.errors_5xx[i] += other.errors_5xx[i];
            self.resets[i] += other.resets[i];
            self.latency_samples[i] += other.latency_samples[i];
            self.db_samples[i] += other.db_samples[i];
            self.filter_requests[i] += other.filter_requests[i];
        }
        self.mirror_sent += other.mirror_sent;
        self.accepted += other.accepted;
        self.families += other.families;
    }
}

/// One flush of one Envoy: its metric families and what the engine must take from them.
#[derive(Clone, Debug, PartialEq)]
pub struct Flush {
    /// The families, in the order Envoy sends them (counters, gauges, histograms).
    pub families: Vec<prom::MetricFamily>,
    /// What the engine adds to its windows for them.
    pub expected: Expected,
}

impl Flush {
    /// The flush as a message; `node` makes it the first of a stream.
    pub fn message(&self, node: Option<Node>) -> StreamMetricsMessage {
        StreamMetricsMessage {
            identifier: node.map(|node| Identifier { node: Some(node) }),
            envoy_metrics: self.families.clone(),
        }
    }
}

/// The registry `doppel serve` builds for a policy of `checkout` on the fleet's two clusters.
pub fn registry() -> ClusterRegistry {
    ClusterRegistry::new()
        .with(PRIMARY_CLUSTER, SERVICE, Variant::Primary)
        .with(SHADOW_CLUSTER, SERVICE, Variant::Shadow)
}

/// The node an Envoy of the fleet identifies itself with: its id, the fleet's cluster, and the
/// list of extensions compiled in, which makes the identifier about 64 KB as Envoy's is.
pub fn node(id: &str) -> Node {
    let categories = [
        "envoy.filters.http",
        "envoy.filters.network",
        "envoy.filters.listener",
        "envoy.transport_sockets.upstream",
        "envoy.access_loggers",
        "envoy.stats_sinks",
        "envoy.tracers",
        "envoy.matching.input_matchers",
    ];
    let extensions = (0..420)
        .map(|i| {
            let category = categories[i % categories.len()];
            Extension {
                name: format!("{category}.extension_number_{i}"),
                category: category.to_owned(),
                type_urls: vec![format!(
                    "envoy.extensions.{}.v3.ExtensionNumber{i}Config",
                    category.trim_start_matches("envoy.")
                )],
                ..Extension::default()
            }
        })
        .collect();
    Node {
        id: id.to_owned(),
        cluster: "fleet".to_owned(),
        user_agent_name: "envoy".to_owned(),
        extensions,
        ..Node::default()
    }
}

/// A small deterministic generator (SplitMix64): the same seed, the same flush.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[low, high)`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }
}

/// Cumulative bucket counts over [`DEFAULT_BUCKETS`] for `samples` samples around bucket
/// `center`, and their sum (each sample at its bucket's bound).
fn buckets(samples: u64, center: usize) -> (Vec<u64>, f64) {
    let shares = [(center.saturating_sub(1), 2), (center, 6), (center + 1, 2)];
    let mut per_bucket = vec![0u64; DEFAULT_BUCKETS.len()];
    let mut left = samples;
    for (i, (bucket, tenths)) in shares.iter().enumerate() {
        let n = if i + 1 == shares.len() {
            left
        } else {
            (samples * tenths / 10).min(left)
        };
        per_bucket[*bucket] += n;
        left -= n;
    }
    let sum = per_bucket
        .iter()
        .zip(DEFAULT_BUCKETS)
        .map(|(n, bound)| *n as f64 * bound)
        .sum();
    let mut below = 0;
    let cumulative = per_bucket
        .iter()
        .map(|n| {
            below += n;
            below
        })
        .collect();
    (cumulative, sum)
}

fn latency(name: &str, labels: &[(&str, &str)], samples: u64, center: usize) -> prom::MetricFamily {
    let (cumulative, sum) = buckets(samples, center);
    histogram(name, labels, &DEFAULT_BUCKETS, &cumulative, samples, sum)
}

fn filter_name(service: &str, scope: Scope, stat: &str) -> String {
    format!(
        "{}{}",
        names::ENVOY_PREFIX,
        names::metric_name(service, scope, stat)
    )
}

/// One flush of one Envoy of the fleet, its values drawn from `seed`.
pub fn flush(seed: u64) -> Flush {
    let mut draw = Draw(seed);
    let mut counters = Vec::new();
    let mut gauges = Vec::new();
    let mut histograms = Vec::new();
    let mut expected = Expected::default();

    let mapped = [(PRIMARY_CLUSTER, 0usize), (SHADOW_CLUSTER, 1)];
    let clusters = mapped
        .iter()
        .map(|(c, v)| (*c, Some(*v)))
        .chain(OTHER_CLUSTERS.iter().map(|c| (*c, None)));
    for (cluster, variant) in clusters {
        let labels = [(CLUSTER_LABEL, cluster)];
        // The shadow takes about a twentieth of checkout's traffic.
        let requests = match variant {
            Some(1) => draw.range(20, 80),
            _ => draw.range(400, 1600),
        };
        let errors = requests / 100 + draw.range(0, 3);
        for stat in CLUSTER_COUNTERS {
            counters.push(counter(
                &format!("cluster.{stat}"),
                &labels,
                draw.range(0, 50) as f64,
            ));
        }
        counters.push(counter(
            "cluster.upstream_rq_total",
            &labels,
            requests as f64,
        ));
        let mut resets = 0;
        for stat in [
            "upstream_rq_timeout",
            "upstream_rq_rx_reset",
            "upstream_rq_pending_failure_eject",
        ] {
            let n = draw.range(0, 3);
            resets += n;
            counters.push(counter(&format!("cluster.{stat}"), &labels, n as f64));
        }
        for (class, n) in [("2", requests - errors), ("4", 0), ("5", errors)] {
            counters.push(counter(
                "cluster.upstream_rq_xx",
                &[(CLUSTER_LABEL, cluster), (CODE_CLASS_LABEL, class)],
                n as f64,
            ));
        }
        for (code, n) in [("200", requests - errors), ("404", 0), ("503", errors)] {
            counters.push(counter(
                "cluster.upstream_rq",
                &[(CLUSTER_LABEL, cluster), ("envoy.response_code", code)],
                n as f64,
            ));
        }
        for stat in CLUSTER_GAUGES {
            gauges.push(gauge(
                &format!("cluster.{stat}"),
                &labels,
                draw.range(0, 100) as f64,
            ));
        }
        histograms.push(latency("cluster.upstream_rq_time", &labels, requests, 5));
        histograms.push(latency("cluster.upstream_cx_connect_ms", &labels, 4, 1));
        histograms.push(latency("cluster.upstream_cx_length_ms", &labels, 3, 12));
        if let Some(v) = variant {
            expected.requests[v] += requests;
            expected.errors_5xx[v] += errors;
            expected.resets[v] += resets;
            expected.latency_samples[v] += requests;
            // Total, 5xx, three resets, latency.
            expected.accepted += 6;
        }
    }

    for listener in LISTENERS {
        let labels = [("envoy.listener_address", listener)];
        for stat in LISTENER_COUNTERS {
            counters.push(counter(stat, &labels, draw.range(0, 200) as f64));
        }
        for class in ["2", "4", "5"] {
            counters.push(counter(
                "listener.http.downstream_rq_xx",
                &[
                    ("envoy.listener_address", listener),
                    ("envoy.http_conn_manager_prefix", "ingress_http"),
                    (CODE_CLASS_LABEL, class),
                ],
                draw.range(0, 1000) as f64,
            ));
        }
        for stat in [
            "listener.downstream_cx_active",
            "listener.downstream_pre_cx_active",
        ] {
            gauges.push(gauge(stat, &labels, draw.range(0, 100) as f64));
        }
        histograms.push(latency(
            "listener.downstream_cx_length_ms",
            &labels,
            draw.range(10, 100),
            11,
        ));
    }

    for prefix in CONNECTION_MANAGERS {
        let labels = [("envoy.http_conn_manager_prefix", prefix)];
        for stat in CONNECTION_MANAGER_COUNTERS {
            counters.push(counter(stat, &labels, draw.range(0, 2000) as f64));
        }
        for class in ["2", "3", "4", "5"] {
            counters.push(counter(
                "http.downstream_rq_xx",
                &[
                    ("envoy.http_conn_manager_prefix", prefix),
                    (CODE_CLASS_LABEL, class),
                ],
                draw.range(0, 1000) as f64,
            ));
        }
        for stat in CONNECTION_MANAGER_GAUGES {
            gauges.push(gauge(stat, &labels, draw.range(0, 100) as f64));
        }
        histograms.push(latency(
            "http.downstream_rq_time",
            &labels,
            draw.range(100, 2000),
            5,
        ));
        histograms.push(latency(
            "http.downstream_cx_length_ms",
            &labels,
            draw.range(10, 100),
            11,
        ));
    }

    for stat in SERVER_COUNTERS {
        counters.push(counter(stat, &[], draw.range(0, 3) as f64));
    }
    for stat in SERVER_GAUGES {
        gauges.push(gauge(stat, &[], draw.range(0, 1 << 30) as f64));
    }
    histograms.push(latency("server.initialization_time_ms", &[], 1, 7));

    // The filter: checkout in split mode (request stats superseded by the clusters'; custom
    // `db` read), search in mirror mode (read in full).
    for variant in Variant::ALL {
        let v = variant as usize;
        let scope = Scope::Variant(variant);
        for stat in ["rq_total", "rq_5xx", "rq_reset"] {
            counters.push(counter(
                &filter_name(SERVICE, scope, stat),
                &[],
                draw.range(0, 100) as f64,
            ));
        }
        histograms.push(latency(
            &filter_name(SERVICE, scope, "rq_time_us"),
            &[],
            draw.range(0, 100),
            9,
        ));
        let db = draw.range(0, 500);
        histograms.push(latency(
            &filter_name(SERVICE, scope, &names::custom_stat("db")),
            &[],
            db,
            8,
        ));
        expected.db_samples[v] += db;
        expected.accepted += 1;

        let requests = draw.range(50, 500);
        counters.push(counter(
            &filter_name(FILTER_SERVICE, scope, "rq_total"),
            &[],
            requests as f64,
        ));
        for stat in ["rq_5xx", "rq_reset"] {
            counters.push(counter(
                &filter_name(FILTER_SERVICE, scope, stat),
                &[],
                (requests / 200) as f64,
            ));
        }
        histograms.push(latency(
            &filter_name(FILTER_SERVICE, scope, "rq_time_us"),
            &[],
            requests,
            9,
        ));
        expected.filter_requests[v] += requests;
        expected.accepted += 4;
    }
    for stat in MIRROR_STATS {
        let n = draw.range(0, 40);
        if stat == "sent" {
            expected.mirror_sent += n;
        }
        counters.push(counter(
            &filter_name(FILTER_SERVICE, Scope::Mirror, stat),
            &[],
            n as f64,
        ));
        expected.accepted += 1;
    }

    let mut families = counters;
    families.append(&mut gauges);
    families.append(&mut histograms);
    expected.families = families.len() as u64;
    Flush { families, expected }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::convert;

    #[test]
    fn fleet_flush_is_envoy_sized_and_converts_to_exactly_what_it_expects() {
        let flush = flush(7);
        assert_eq!(flush.families.len(), 412);
        let histograms = flush
            .families
            .iter()
            .filter(|f| f.r#type == Some(prom::MetricType::Histogram as i32))
            .count();
        assert_eq!(histograms, 31);
        let converted = convert::Flush::from_message(flush.message(None), &registry());
        assert_eq!(converted.updates.len() as u64, flush.expected.accepted);
        assert!(
            converted.rejected.iter().all(|e| e.is_ignorable()),
            "{:?}",
            converted.rejected.iter().find(|e| !e.is_ignorable())
        );
        let node_bytes = prost::Message::encoded_len(&node("envoy-0"));
        assert!((48_000..80_000).contains(&node_bytes), "{node_bytes}");
    }
}
