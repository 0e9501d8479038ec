use doppel_filter::names::Variant::{Primary, Shadow};

use super::*;
use crate::ingest::wire::{counter, histogram, message};
use crate::metrics::Histogram;

const CLUSTER: &str = "envoy.cluster_name";
const BOUNDS: [f64; 3] = [1.0, 5.0, 25.0];

fn store(config: StoreConfig) -> WindowStore {
    WindowStore::new(
        config,
        ClusterRegistry::new()
            .with("cart_v1", "cart", Primary)
            .with("cart_v2", "cart", Shadow),
    )
}

fn small() -> StoreConfig {
    StoreConfig {
        window_ms: 1_000,
        windows: 3,
        max_services: 4,
        max_custom: 2,
    }
}

/// One Envoy's flush for cart: `requests` to the primary cluster, `errors` of them 5xx, and a
/// latency interval with `cumulative` counts at or below [`BOUNDS`].
fn cart_flush(requests: u64, errors: u64, cumulative: [u64; 3], sum: f64) -> StreamMetricsMessage {
    message(
        None,
        vec![
            counter(
                "cluster.upstream_rq_total",
                &[(CLUSTER, "cart_v1")],
                requests as f64,
            ),
            counter(
                "cluster.upstream_rq_xx",
                &[("envoy.response_code_class", "5"), (CLUSTER, "cart_v1")],
                errors as f64,
            ),
            histogram(
                "cluster.upstream_rq_time",
                &[(CLUSTER, "cart_v1")],
                &BOUNDS,
                &cumulative,
                requests,
                sum,
            ),
        ],
    )
}

#[test]
fn two_envoys_add_up_bucket_by_bucket() {
    let store = store(small());
    let a = store.ingest(10_100, cart_flush(10, 1, [2, 6, 9], 70.0), "a");
    let b = store.ingest(10_900, cart_flush(5, 2, [0, 1, 5], 60.0), "b");
    assert_eq!(
        a,
        IngestReport {
            accepted: 3,
            ignored: 0,
            rejected: 0
        }
    );
    assert_eq!(b.accepted, 3);

    let windows = store.windows("cart", 0);
    assert_eq!(windows.len(), 1);
    let w = &windows[0];
    assert_eq!((w.start_ms, w.end_ms), (10_000, 11_000));
    assert_eq!((w.primary.requests, w.primary.errors_5xx), (15, 3));
    assert_eq!(
        w.primary.latency_ms,
        Histogram {
            bounds: BOUNDS.to_vec(),
            counts: vec![2, 5, 7, 1],
            sum: 130.0
        }
    );
    assert_eq!(w.shadow, Default::default());
    assert_eq!(store.counts().accepted(), 6);
}

#[test]
fn windows_roll_and_the_ring_stays_bounded() {
    let store = store(small());
    for second in 0..10u64 {
        store.ingest(
            second * 1_000 + 5,
            cart_flush(second + 1, 0, [0, 0, 0], 0.0),
            "a",
        );
    }
    let windows = store.windows("cart", 0);
    let starts: Vec<_> = windows.iter().map(|w| w.start_ms).collect();
    assert_eq!(starts, [7_000, 8_000, 9_000]);
    assert_eq!(windows[2].primary.requests, 10);

    // Older than every window kept: refused and counted, nothing changes.
    let report = store.ingest(2_500, cart_flush(99, 0, [0, 0, 0], 0.0), "late");
    assert_eq!(report.rejected, 3);
    assert_eq!(store.counts().rejected_with("stale_window"), 3);
    assert_eq!(store.windows("cart", 0), windows);

    // A late flush for a window still kept lands in it.
    store.ingest(8_999, cart_flush(1, 0, [0, 0, 0], 0.0), "late");
    assert_eq!(store.windows("cart", 8_500)[0].primary.requests, 10);
    assert_eq!(store.windows("cart", 9_000).len(), 1);
}

#[test]
fn sum_spans_a_range_of_windows() {
    let store = store(small());
    store.ingest(1_000, cart_flush(4, 1, [1, 2, 3], 10.0), "a");
    store.ingest(2_000, cart_flush(6, 0, [3, 3, 6], 20.0), "a");
    store.ingest(3_000, cart_flush(100, 0, [0, 0, 0], 0.0), "a");
    let sum = store.sum("cart", 1_000, 3_000).unwrap().unwrap();
    assert_eq!((sum.start_ms, sum.end_ms), (1_000, 3_000));
    assert_eq!((sum.primary.requests, sum.primary.errors_5xx), (10, 1));
    assert_eq!(sum.primary.latency_ms.counts, vec![4, 1, 4, 1]);
    assert_eq!(store.sum("cart", 50_000, 60_000).unwrap(), None);
    assert_eq!(store.sum("nobody", 0, u64::MAX).unwrap(), None);
}

#[test]
fn a_histogram_with_other_buckets_is_refused_and_the_window_kept() {
    let store = store(small());
    store.ingest(1_000, cart_flush(4, 0, [1, 2, 3], 10.0), "a");
    let before = store.windows("cart", 0);
    let other = message(
        None,
        vec![histogram(
            "cluster.upstream_rq_time",
            &[(CLUSTER, "cart_v1")],
            &[2.0, 4.0],
            &[1, 1],
            1,
            3.0,
        )],
    );
    let report = store.ingest(1_500, other, "b");
    assert_eq!(
        report,
        IngestReport {
            accepted: 0,
            ignored: 0,
            rejected: 1
        }
    );
    assert_eq!(store.counts().rejected_with("bucket_mismatch"), 1);
    assert_eq!(store.windows("cart", 0), before);
}

#[test]
fn services_and_custom_metrics_are_bounded() {
    let store = store(small());
    let services: Vec<_> = (0..6)
        .map(|i| {
            counter(
                &format!("wasmcustom.doppel.svc{i}.primary.rq_total"),
                &[],
                1.0,
            )
        })
        .collect();
    store.ingest(0, message(None, services), "a");
    assert_eq!(store.services().len(), 4);
    assert_eq!(store.counts().rejected_with("too_many_services"), 2);

    let customs: Vec<_> = ["db", "cache", "queue", "db"]
        .iter()
        .map(|name| {
            histogram(
                &format!("wasmcustom.doppel.svc0.shadow.custom.{name}_us"),
                &[],
                &[1000.0],
                &[1],
                2,
                1500.0,
            )
        })
        .collect();
    store.ingest(0, message(None, customs), "a");
    let window = &store.windows("svc0", 0)[0];
    assert_eq!(
        window.shadow.custom.keys().collect::<Vec<_>>(),
        ["cache", "db"]
    );
    assert_eq!(window.shadow.custom["db"].counts, vec![2, 2]);
    assert_eq!(store.counts().rejected_with("too_many_custom_metrics"), 1);
}

#[test]
fn malformed_input_never_changes_a_window() {
    let store = store(small());
    store.ingest(1_000, cart_flush(4, 1, [1, 2, 3], 10.0), "a");
    let before = store.windows("cart", 0);
    let name = "wasmcustom.doppel.cart.mirror.sent";
    let bad = message(
        None,
        vec![
            counter("cluster.upstream_rq_total", &[(CLUSTER, "cart_v1")], -5.0),
            counter(
                "cluster.upstream_rq_total",
                &[(CLUSTER, "cart_v1")],
                f64::NAN,
            ),
            counter("cluster.upstream_rq_total", &[(CLUSTER, "cart_v1")], 1e19),
            counter(name, &[], 0.5),
            histogram(
                "cluster.upstream_rq_time",
                &[(CLUSTER, "cart_v1")],
                &BOUNDS,
                &[3, 2, 1],
                3,
                1.0,
            ),
            histogram(
                "cluster.upstream_rq_time",
                &[(CLUSTER, "cart_v1")],
                &BOUNDS[..2],
                &[1, 2, 3],
                3,
                1.0,
            ),
            histogram(
                "cluster.upstream_rq_time",
                &[(CLUSTER, "cart_v1")],
                &BOUNDS,
                &[1, 2, 3],
                3,
                f64::INFINITY,
            ),
        ],
    );
    let report = store.ingest(1_200, bad, "evil");
    assert_eq!(
        report,
        IngestReport {
            accepted: 0,
            ignored: 0,
            rejected: 7
        }
    );
    assert_eq!(store.windows("cart", 0), before);
    let rejected = store.counts().rejected();
    for code in [
        "negative_value",
        "not_finite",
        "too_large",
        "not_an_integer",
        "bad_histogram",
        "bucket_mismatch",
    ] {
        assert!(
            rejected.get(code).is_some_and(|n| *n > 0),
            "{code}: {rejected:?}"
        );
    }
}

#[test]
fn a_restarted_envoy_starts_from_zero_deltas_and_never_subtracts() {
    // Counters are deltas and histograms per-interval: a restart shows as a new stream whose
    // first flush carries what the new process served since it started, never less than zero.
    let store = store(small());
    store.ingest(
        1_000,
        cart_flush(50, 5, [10, 40, 50], 300.0),
        "a (before restart)",
    );
    store.ingest(1_100, cart_flush(0, 0, [0, 0, 0], 0.0), "a (after restart)");
    store.ingest(1_200, cart_flush(3, 0, [1, 3, 3], 7.0), "a (after restart)");
    let w = &store.windows("cart", 0)[0];
    assert_eq!((w.primary.requests, w.primary.errors_5xx), (53, 5));
    assert_eq!(w.primary.latency_ms.counts, vec![11, 32, 10, 0]);
    assert_eq!(w.primary.latency_ms.total(), 53);
}

#[tokio::test]
async fn subscribers_wake_on_new_data_only() {
    let store = store(small());
    let mut changes = store.subscribe();
    assert!(!changes.has_changed().unwrap());
    store.ingest(
        0,
        message(None, vec![counter("server.uptime", &[], 1.0)]),
        "a",
    );
    assert!(!changes.has_changed().unwrap());
    store.ingest(0, cart_flush(1, 0, [0, 1, 1], 2.0), "a");
    tokio::time::timeout(std::time::Duration::from_secs(1), changes.changed())
        .await
        .expect("woken")
        .unwrap();
}
