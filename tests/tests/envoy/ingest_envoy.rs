//! End to end: real Envoy processes stream their stats over the MetricsService sink into one
//! engine, and the engine's windows hold exactly what the Envoys served.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_engine::ingest::{self, ClusterRegistry, CounterMode, StoreConfig, WindowStore};
use doppel_engine::metrics::{Histogram, ServiceWindow, VariantWindow};
use doppel_filter::names::Variant;
use doppel_tests::ingest_support::{
    Envoy, Upstream, envoy_bin, get, sink_bootstrap, workspace_root,
};
use tokio::sync::oneshot;

/// The engine under test, serving on 127.0.0.1 until dropped.
struct Engine {
    addr: SocketAddr,
    store: Arc<WindowStore>,
    _stop: oneshot::Sender<()>,
}

impl Engine {
    async fn start(counters: CounterMode) -> Engine {
        let registry = ClusterRegistry::new()
            .with("cart_v1", "cart", Variant::Primary)
            .with("cart_v2", "cart", Variant::Shadow);
        let store = Arc::new(WindowStore::new(
            StoreConfig {
                window_ms: 1_000,
                windows: 600,
                counters,
                ..StoreConfig::default()
            },
            registry,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(ingest::serve(listener, store.clone(), async {
            let _ = stopped.await;
        }));
        Engine {
            addr,
            store,
            _stop: stop,
        }
    }

    /// Everything the engine holds for cart, all windows summed.
    fn total(&self) -> ServiceWindow {
        self.store
            .sum("cart", 0, u64::MAX)
            .expect("histograms of one service share buckets")
            .unwrap_or_default()
    }
}

/// Sends `n` GETs to `path` through `envoy` and checks each answer's status.
async fn drive(envoy: &Envoy, path: &str, n: usize, status: u16) {
    for _ in 0..n {
        let (got, _) = get(envoy.listener, path)
            .await
            .expect("request through Envoy");
        assert_eq!(got, status, "GET {path}");
    }
}

/// What one variant served, in the engine's terms, from one Envoy's own admin stats.
async fn served(envoy: &Envoy, cluster: &str) -> VariantWindow {
    let requests = envoy
        .counter(&format!("cluster.{cluster}.upstream_rq_total"))
        .await;
    let errors_5xx = envoy
        .counter(&format!("cluster.{cluster}.upstream_rq_5xx"))
        .await;
    let buckets = envoy
        .histogram(&format!("cluster.{cluster}.upstream_rq_time"))
        .await;
    let mut latency = Histogram::default();
    if !buckets.is_empty() {
        // Admin counts are cumulative across buckets; the overflow is not in them, and a
        // local upstream answers far below Envoy's last bound (one hour).
        let mut below = 0;
        latency.bounds = buckets.iter().map(|(bound, _)| *bound).collect();
        latency.counts = buckets
            .iter()
            .map(|(_, at_or_below)| {
                let n = at_or_below - below;
                below = *at_or_below;
                n
            })
            .collect();
        latency.counts.push(0);
    }
    VariantWindow {
        requests,
        errors_5xx,
        latency_ms: latency,
        ..VariantWindow::default()
    }
}

/// The counts that must match between the engine and the Envoys: requests, 5xx, and latency
/// bucket counts (sums are floats measured by each Envoy and are compared separately).
fn comparable(w: &VariantWindow) -> (u64, u64, Vec<u64>) {
    (w.requests, w.errors_5xx, w.latency_ms.counts.clone())
}

async fn sum_served(envoys: &[&Envoy], cluster: &str) -> VariantWindow {
    let mut total = VariantWindow::default();
    for envoy in envoys {
        total
            .merge(&served(envoy, cluster).await)
            .expect("Envoys share buckets");
    }
    total
}

/// Waits until the engine's cart windows hold exactly `base` plus what `envoys` report having
/// served, and that the latter is `expected` (requests, 5xx) per variant; fails with both
/// sides after 30 s.
async fn wait_for_sum(
    engine: &Engine,
    base: &ServiceWindow,
    envoys: &[&Envoy],
    expected: [(u64, u64); 2],
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut changes = engine.store.subscribe();
    loop {
        let primary = sum_served(envoys, "cart_v1").await;
        let shadow = sum_served(envoys, "cart_v2").await;
        let total = engine.total();
        let mut with_base = (base.primary.clone(), base.shadow.clone());
        with_base.0.merge(&primary).expect("same buckets");
        with_base.1.merge(&shadow).expect("same buckets");
        let envoys_side = (comparable(&with_base.0), comparable(&with_base.1));
        let engine_side = (comparable(&total.primary), comparable(&total.shadow));
        let served_all = [primary.requests, shadow.requests] == [expected[0].0, expected[1].0]
            && primary.latency_ms.total() == expected[0].0
            && shadow.latency_ms.total() == expected[1].0;
        if served_all && envoys_side == engine_side {
            assert_eq!(
                [
                    (primary.requests, primary.errors_5xx),
                    (shadow.requests, shadow.errors_5xx)
                ],
                expected
            );
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "the engine never matched the Envoys\nEnvoys: {envoys_side:?}\nengine: {engine_side:?}\nexpected (requests, 5xx): {expected:?}\nrejections: {:?}",
                engine.store.counts().rejected()
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), changes.changed()).await;
    }
}

/// Real Envoys send only well-formed stats: nothing but unread names (and `also`) may be
/// refused.
fn assert_nothing_malformed(engine: &Engine, also: &[&str]) {
    let rejected = engine.store.counts().rejected();
    assert!(rejected.get("unknown_metric").is_some_and(|n| *n > 0));
    for (code, n) in &rejected {
        assert!(
            ["unknown_metric", "unmapped_cluster"].contains(code) || also.contains(code),
            "{n} metrics from a real Envoy rejected as {code}: {rejected:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_two_envoys_windows_equal_the_sum_of_what_each_served() {
    let engine = Engine::start(CounterMode::Deltas).await;
    let upstream = Upstream::start().await;
    let a = Envoy::start(&sink_bootstrap("envoy-a", engine.addr, upstream.addr, true)).await;
    let b = Envoy::start(&sink_bootstrap("envoy-b", engine.addr, upstream.addr, true)).await;

    // Different traffic and latency on each, so that a lost or doubled Envoy shows.
    drive(&a, "/cart", 25, 200).await;
    drive(&a, "/cart/fail", 5, 500).await;
    drive(&a, "/shadow/cart", 10, 200).await;
    drive(&b, "/cart?delay_ms=30", 17, 200).await;
    drive(&b, "/cart/fail", 3, 500).await;
    drive(&b, "/shadow/cart?delay_ms=60", 12, 200).await;
    drive(&b, "/shadow/cart/fail", 2, 500).await;

    wait_for_sum(
        &engine,
        &ServiceWindow::default(),
        &[&a, &b],
        [(50, 8), (24, 2)],
    )
    .await;
    let total = engine.total();
    // Each Envoy's latency sits in its own buckets: B's delays are at least 30 and 60 ms.
    let at_least = |h: &Histogram, ms: f64| -> u64 {
        h.bounds
            .iter()
            .zip(&h.counts)
            .filter(|(bound, _)| **bound > ms)
            .map(|(_, n)| n)
            .sum::<u64>()
            + h.counts.last().copied().unwrap_or(0)
    };
    assert!(at_least(&total.primary.latency_ms, 25.0) >= 17);
    assert!(at_least(&total.shadow.latency_ms, 50.0) >= 12);
    assert!(total.primary.latency_ms.sum >= 17.0 * 30.0);
    assert!(total.shadow.latency_ms.sum >= 12.0 * 60.0);

    assert_settled(&engine).await;
    assert_nothing_malformed(&engine, &[]);
}

/// Later flushes (with nothing new served) change nothing: no Envoy is counted twice.
async fn assert_settled(engine: &Engine) {
    let settled = engine.total();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        comparable(&engine.total().primary),
        comparable(&settled.primary)
    );
    assert_eq!(
        comparable(&engine.total().shadow),
        comparable(&settled.shadow)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_envoy_reporting_cumulative_counters_matches_what_it_served() {
    let engine = Engine::start(CounterMode::Cumulative).await;
    let upstream = Upstream::start().await;
    let envoy = Envoy::start(&sink_bootstrap(
        "envoy-c",
        engine.addr,
        upstream.addr,
        false,
    ))
    .await;
    // What was served before the stream's first message is its baseline: wait for that
    // message (Envoy sends only counters used so far, so nothing of cart's is in it yet).
    let deadline = Instant::now() + Duration::from_secs(15);
    while engine.store.counts().rejected_with("unknown_metric") == 0 {
        assert!(
            Instant::now() < deadline,
            "no flush from Envoy: accepted {}, refused {:?}\n{}",
            engine.store.counts().accepted(),
            engine.store.counts().rejected(),
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drive(&envoy, "/cart", 14, 200).await;
    drive(&envoy, "/cart/fail", 4, 500).await;
    drive(&envoy, "/shadow/cart?delay_ms=20", 6, 200).await;
    wait_for_sum(
        &engine,
        &ServiceWindow::default(),
        &[&envoy],
        [(18, 4), (6, 0)],
    )
    .await;
    assert_settled(&engine).await;
    assert_nothing_malformed(&engine, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_restarted_envoy_adds_on_without_corrupting_windows() {
    let engine = Engine::start(CounterMode::Deltas).await;
    let upstream = Upstream::start().await;
    let bootstrap = sink_bootstrap("envoy-r", engine.addr, upstream.addr, true);

    let first = Envoy::start(&bootstrap).await;
    drive(&first, "/cart", 12, 200).await;
    drive(&first, "/cart/fail", 4, 500).await;
    wait_for_sum(
        &engine,
        &ServiceWindow::default(),
        &[&first],
        [(16, 4), (0, 0)],
    )
    .await;
    let before = engine.total();
    drop(first);

    // The same node comes back with its counters at zero; the engine adds on.
    let second = Envoy::start(&bootstrap).await;
    drive(&second, "/cart", 5, 200).await;
    drive(&second, "/shadow/cart/fail", 1, 500).await;
    wait_for_sum(&engine, &before, &[&second], [(5, 0), (1, 1)]).await;
    let after = engine.total();
    assert_eq!((after.primary.requests, after.primary.errors_5xx), (21, 4));
    assert_eq!(after.primary.latency_ms.total(), 21);
    assert_eq!((after.shadow.requests, after.shadow.errors_5xx), (1, 1));
    // The killed Envoy's stream broke mid-way: counted, nothing else.
    assert_nothing_malformed(&engine, &["stream_error"]);
}

#[test]
fn ingest_sink_template_validates() {
    let file = workspace_root().join("envoy/metrics-sink.yaml");
    let output = Command::new(envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(&file)
        .output()
        .expect("run envoy --mode validate");
    assert!(
        output.status.success(),
        "{} does not validate:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
