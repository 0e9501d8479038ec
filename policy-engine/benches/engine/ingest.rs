//! MetricsService ingestion: one flush of one Envoy as its `metrics_service` sink sends it
//! (`emit_tags_as_labels`, counters as deltas, histograms in Envoy's default buckets):
//! decoding, converting to updates, adding them to the window, and the whole path.
//!
//! The message has 221 families (511 metrics, 35 KB encoded) as an Envoy fronting one service
//! sends them (the group name prints the counts): per-cluster stats
//! of 5 clusters (the two variants, the engine's two, a database), the HTTP connection
//! manager's, the listener's, server, cluster manager, runtime and Wasm stats, and the doppel
//! filter's per-variant, custom and mirror metrics. Most are names doppel does not read.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput};
use doppel_engine::ingest::wire::{counter, gauge, histogram, message};
use doppel_engine::ingest::{ClusterRegistry, Flush, StoreConfig, WindowStore};
use doppel_engine::stats::sim::ENVOY_BOUNDS_MS;
use doppel_filter::names::Variant;
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::io::prometheus::client as prom;
use prost::Message;

const CLUSTERS: [&str; 5] = [
    "checkout-v41",
    "checkout-v42",
    "doppel_xds",
    "doppel_metrics",
    "orders-db",
];

const CLUSTER_COUNTERS: [&str; 40] = [
    "assignment_stale",
    "assignment_timeout_received",
    "bind_errors",
    "default.total_match_count",
    "lb_healthy_panic",
    "lb_local_cluster_not_ok",
    "lb_recalculate_zone_structures",
    "lb_zone_cluster_too_small",
    "lb_zone_no_capacity_left",
    "lb_zone_number_differs",
    "lb_zone_routing_all_directly",
    "lb_zone_routing_cross_zone",
    "lb_zone_routing_sampled",
    "membership_change",
    "original_dst_host_invalid",
    "retry_or_shadow_abandoned",
    "update_attempt",
    "update_empty",
    "update_failure",
    "update_no_rebuild",
    "update_success",
    "upstream_cx_close_notify",
    "upstream_cx_connect_attempts_exceeded",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_destroy",
    "upstream_cx_destroy_local",
    "upstream_cx_destroy_remote",
    "upstream_cx_http1_total",
    "upstream_cx_http2_total",
    "upstream_cx_rx_bytes_total",
    "upstream_cx_total",
    "upstream_cx_tx_bytes_total",
    "upstream_rq_cancelled",
    "upstream_rq_completed",
    "upstream_rq_pending_overflow",
    "upstream_rq_pending_total",
    "upstream_rq_retry",
    "upstream_rq_tx_reset",
    "upstream_flow_control_paused_reading_total",
];

const CLUSTER_GAUGES: [&str; 12] = [
    "circuit_breakers.default.cx_open",
    "circuit_breakers.default.rq_open",
    "lb_subsets_active",
    "max_host_weight",
    "membership_degraded",
    "membership_excluded",
    "membership_healthy",
    "membership_total",
    "upstream_cx_active",
    "upstream_cx_rx_bytes_buffered",
    "upstream_rq_active",
    "upstream_rq_pending_active",
];

const HTTP_COUNTERS: [&str; 40] = [
    "downstream_cx_delayed_close_timeout",
    "downstream_cx_destroy",
    "downstream_cx_destroy_local",
    "downstream_cx_destroy_remote",
    "downstream_cx_drain_close",
    "downstream_cx_http1_total",
    "downstream_cx_http2_total",
    "downstream_cx_idle_timeout",
    "downstream_cx_max_duration_reached",
    "downstream_cx_protocol_error",
    "downstream_cx_rx_bytes_total",
    "downstream_cx_ssl_total",
    "downstream_cx_total",
    "downstream_cx_tx_bytes_total",
    "downstream_flow_control_paused_reading_total",
    "downstream_rq_completed",
    "downstream_rq_http1_total",
    "downstream_rq_http2_total",
    "downstream_rq_idle_timeout",
    "downstream_rq_non_relative_path",
    "downstream_rq_overload_close",
    "downstream_rq_response_before_rq_complete",
    "downstream_rq_rx_reset",
    "downstream_rq_timeout",
    "downstream_rq_too_large",
    "downstream_rq_total",
    "downstream_rq_tx_reset",
    "downstream_rq_ws_on_non_ws_route",
    "no_cluster",
    "no_route",
    "passthrough_internal_redirect_bad_location",
    "rq_direct_response",
    "rq_redirect",
    "rq_reset_after_downstream_response_started",
    "rq_total",
    "rs_too_large",
    "tracing.client_enabled",
    "tracing.random_sampling",
    "tracing.service_forced",
    "downstream_rq_header_timeout",
];

const SERVER_GAUGES: [&str; 60] = [
    "server.concurrency",
    "server.days_until_first_cert_expiring",
    "server.hot_restart_epoch",
    "server.live",
    "server.memory_allocated",
    "server.memory_heap_size",
    "server.memory_physical_size",
    "server.parent_connections",
    "server.seconds_until_first_ocsp_response_expiring",
    "server.state",
    "server.stats_recent_lookups",
    "server.total_connections",
    "server.uptime",
    "server.version",
    "server.compilation_settings.fips_mode",
    "server.worker_0.watchdog_mega_miss",
    "server.worker_0.watchdog_miss",
    "server.main_thread.watchdog_mega_miss",
    "server.main_thread.watchdog_miss",
    "server.dropped_stat_flushes",
    "server.debug_assertion_failures",
    "server.envoy_bug_failures",
    "server.dynamic_unknown_fields",
    "server.static_unknown_fields",
    "server.wip_protos",
    "server.envoy_notifications",
    "server.initialization_time_ms",
    "cluster_manager.active_clusters",
    "cluster_manager.warming_clusters",
    "cluster_manager.cluster_added",
    "cluster_manager.cluster_modified",
    "cluster_manager.cluster_removed",
    "cluster_manager.cluster_updated",
    "cluster_manager.cluster_updated_via_merge",
    "cluster_manager.update_merge_cancelled",
    "cluster_manager.update_out_of_merge_window",
    "cluster_manager.cds.init_fetch_timeout",
    "cluster_manager.cds.update_attempt",
    "cluster_manager.cds.update_failure",
    "cluster_manager.cds.update_rejected",
    "cluster_manager.cds.update_success",
    "cluster_manager.cds.update_time",
    "cluster_manager.cds.version",
    "listener_manager.listener_added",
    "listener_manager.listener_create_failure",
    "listener_manager.listener_create_success",
    "listener_manager.listener_in_place_updated",
    "listener_manager.listener_modified",
    "listener_manager.listener_removed",
    "listener_manager.listener_stopped",
    "listener_manager.total_listeners_active",
    "listener_manager.total_listeners_draining",
    "listener_manager.total_listeners_warming",
    "listener_manager.workers_started",
    "runtime.admin_overrides_active",
    "runtime.deprecated_feature_seen_since_process_start",
    "runtime.load_error",
    "runtime.load_success",
    "runtime.num_keys",
    "runtime.num_layers",
];

const WASM_AND_CONTROL: [&str; 22] = [
    "wasm.envoy.wasm.runtime.v8.active",
    "wasm.envoy.wasm.runtime.v8.created",
    "wasm_vm.v8.active",
    "wasm_vm.v8.cloned",
    "wasm_vm.v8.created",
    "control_plane.connected_state",
    "control_plane.pending_requests",
    "control_plane.rate_limit_enforced",
    "control_plane.identifier",
    "http1.dropped_headers_with_underscores",
    "http1.metadata_not_supported_error",
    "http1.requests_rejected_with_underscores_in_headers",
    "http1.response_flood",
    "http2.header_overflow",
    "http2.headers_cb_no_stream",
    "http2.inbound_empty_frames_flood",
    "http2.inbound_priority_frames_flood",
    "http2.keepalive_timeout",
    "http2.outbound_control_flood",
    "http2.rx_reset",
    "http2.tx_reset",
    "http2.streams_active",
];

const LISTENER: [&str; 18] = [
    "downstream_cx_active",
    "downstream_cx_destroy",
    "downstream_cx_overflow",
    "downstream_cx_overload_reject",
    "downstream_cx_total",
    "downstream_cx_transport_socket_connect_timeout",
    "downstream_global_cx_overflow",
    "downstream_pre_cx_active",
    "downstream_pre_cx_timeout",
    "extension_config_missing",
    "network_extension_config_missing",
    "no_filter_chain_match",
    "worker_0.downstream_cx_active",
    "worker_0.downstream_cx_total",
    "server_ssl_socket_factory.downstream_context_secrets_not_ready",
    "server_ssl_socket_factory.ssl_context_update_by_sds",
    "server_ssl_socket_factory.upstream_context_secrets_not_ready",
    "admin.downstream_cx_total",
];

/// Cumulative bucket counts of `n` samples spread log-normally over Envoy's buckets.
fn cumulative(n: u64, median_bucket: usize) -> Vec<u64> {
    let weights: Vec<f64> = (0..ENVOY_BOUNDS_MS.len())
        .map(|i| {
            let d = i as f64 - median_bucket as f64;
            (-d * d / 2.0).exp()
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w;
            (n as f64 * acc / total).round() as u64
        })
        .collect()
}

/// Adds `metrics` of a family made by the wire builders to one family of that name.
fn merged(mut families: Vec<prom::MetricFamily>) -> prom::MetricFamily {
    let mut first = families.remove(0);
    for f in families {
        first.metric.extend(f.metric);
    }
    first
}

/// One 10 s flush of an Envoy fronting the checkout service (~1,000 requests/s, 5% shadow).
pub fn flush(node: bool) -> StreamMetricsMessage {
    let mut families = Vec::new();
    let cl = "envoy.cluster_name";
    // Per-cluster stats, one family per stat with one metric per cluster.
    for stat in CLUSTER_COUNTERS {
        families.push(merged(
            CLUSTERS
                .iter()
                .enumerate()
                .map(|(i, c)| counter(&format!("cluster.{stat}"), &[(cl, c)], i as f64 * 3.0))
                .collect(),
        ));
    }
    for stat in CLUSTER_GAUGES {
        families.push(merged(
            CLUSTERS
                .iter()
                .map(|c| gauge(&format!("cluster.{stat}"), &[(cl, c)], 1.0))
                .collect(),
        ));
    }
    let requests = [9_500.0, 500.0, 12.0, 1.0, 4_000.0];
    families.push(merged(
        CLUSTERS
            .iter()
            .zip(requests)
            .map(|(c, n)| counter("cluster.upstream_rq_total", &[(cl, c)], n))
            .collect(),
    ));
    let mut classes = Vec::new();
    for (c, n) in CLUSTERS.iter().zip(requests) {
        for (class, share) in [("2", 0.97), ("4", 0.02), ("5", 0.01)] {
            classes.push(counter(
                "cluster.upstream_rq_xx",
                &[(cl, c), ("envoy.response_code_class", class)],
                (n * share).round(),
            ));
        }
    }
    families.push(merged(classes));
    for stat in [
        "upstream_rq_timeout",
        "upstream_rq_rx_reset",
        "upstream_rq_pending_failure_eject",
    ] {
        families.push(merged(
            CLUSTERS
                .iter()
                .map(|c| counter(&format!("cluster.{stat}"), &[(cl, c)], 1.0))
                .collect(),
        ));
    }
    for (stat, median) in [
        ("upstream_rq_time", 5),
        ("upstream_cx_connect_ms", 1),
        ("upstream_cx_length_ms", 9),
    ] {
        families.push(merged(
            CLUSTERS
                .iter()
                .zip(requests)
                .map(|(c, n)| {
                    let n = n as u64;
                    histogram(
                        &format!("cluster.{stat}"),
                        &[(cl, c)],
                        &ENVOY_BOUNDS_MS,
                        &cumulative(n, median),
                        n,
                        n as f64 * 45.0,
                    )
                })
                .collect(),
        ));
    }
    // The HTTP connection manager's stats (two managers: ingress and admin).
    let hcm = "envoy.http_conn_manager_prefix";
    for stat in HTTP_COUNTERS {
        families.push(merged(
            ["ingress_http", "admin"]
                .iter()
                .map(|p| counter(&format!("http.{stat}"), &[(hcm, p)], 10.0))
                .collect(),
        ));
    }
    for (stat, median) in [("downstream_rq_time", 5), ("downstream_cx_length_ms", 9)] {
        families.push(histogram(
            &format!("http.{stat}"),
            &[(hcm, "ingress_http")],
            &ENVOY_BOUNDS_MS,
            &cumulative(10_000, median),
            10_000,
            450_000.0,
        ));
    }
    // Listener, server, managers, runtime, Wasm, control plane, codecs.
    let addr = "envoy.listener_address";
    for stat in LISTENER {
        families.push(counter(
            &format!("listener.{stat}"),
            &[(addr, "0.0.0.0_8080")],
            5.0,
        ));
    }
    for name in SERVER_GAUGES.iter().chain(&WASM_AND_CONTROL) {
        families.push(gauge(name, &[], 1.0));
    }
    // The doppel filter: per-variant counters (superseded by the cluster stats when the
    // clusters are mapped), latency and `db` histograms in microseconds, mirror counters.
    let us: Vec<f64> = ENVOY_BOUNDS_MS.to_vec();
    for (variant, n) in [("primary", 9_500u64), ("shadow", 500)] {
        let name = |stat: &str| format!("wasmcustom.doppel.checkout.{variant}.{stat}");
        families.push(counter(&name("rq_total"), &[], n as f64));
        families.push(counter(&name("rq_5xx"), &[], (n / 100) as f64));
        families.push(counter(&name("rq_reset"), &[], 1.0));
        for (stat, median) in [("rq_time_us", 12), ("custom.db_us", 10)] {
            families.push(histogram(
                &name(stat),
                &[],
                &us,
                &cumulative(n, median),
                n,
                n as f64 * 40_000.0,
            ));
        }
    }
    for stat in [
        "sent",
        "skipped_method",
        "skipped_body",
        "dropped_in_flight",
        "failed",
        "compared",
        "mismatch_status",
        "mismatch_body",
        "mismatch_latency",
    ] {
        families.push(counter(
            &format!("wasmcustom.doppel.checkout.mirror.{stat}"),
            &[],
            0.0,
        ));
    }
    message(node.then_some(("envoy-7", "shop")), families)
}

/// The registry `doppel serve` builds for the checkout policy: its clusters judge it.
fn registry() -> ClusterRegistry {
    ClusterRegistry::new()
        .with("checkout-v41", "checkout", Variant::Primary)
        .with("checkout-v42", "checkout", Variant::Shadow)
}

/// A store with an open stream that has sent its first message (with the node).
fn store() -> (WindowStore, doppel_engine::ingest::Stream) {
    let store = WindowStore::new(StoreConfig::default(), registry());
    let mut stream = store.open_stream("127.0.0.1:50000");
    store.ingest(NOW_MS, flush(true), &mut stream);
    (store, stream)
}

const NOW_MS: u64 = 1_765_000_000_000;

pub fn benches(c: &mut Criterion) {
    let msg = flush(false);
    let bytes = msg.encode_to_vec();
    let families = msg.envoy_metrics.len();
    let metrics: usize = msg.envoy_metrics.iter().map(|f| f.metric.len()).sum();
    let registry = registry();
    let converted = Flush::from_message(msg.clone(), &registry);
    // The flush must be read as the engine reads it: both variants' requests taken.
    assert!(
        converted.updates.len() >= 10,
        "{} updates from {families} families ({metrics} metrics, {} bytes)",
        converted.updates.len(),
        bytes.len()
    );
    let mut group = c.benchmark_group(format!(
        "ingest_{families}_families_{metrics}_metrics_{}_kb",
        bytes.len() / 1024
    ));
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| {
        b.iter(|| StreamMetricsMessage::decode(black_box(bytes.as_slice())))
    });
    group.bench_function("convert", |b| {
        b.iter_batched(
            || msg.clone(),
            |m| Flush::from_message(m, &registry),
            BatchSize::SmallInput,
        )
    });
    let (store, mut stream) = store();
    group.bench_function("apply_to_window", |b| {
        b.iter_batched(
            || converted.updates.clone(),
            |updates| store.apply(NOW_MS, updates),
            BatchSize::SmallInput,
        )
    });
    // What the server does per message received: decode, convert, deltas, window, counts.
    group.bench_function("decode_and_ingest", |b| {
        b.iter(|| {
            let m = StreamMetricsMessage::decode(black_box(bytes.as_slice())).expect("decodes");
            store.ingest(NOW_MS, m, &mut stream)
        })
    });
    group.finish();
}
