//! The real Envoy on mutual TLS to the engine (`envoy/ads-tls.yaml`): with a certificate from
//! the engine's client CA it takes its config over ADS, serves traffic with it and streams its
//! stats into the MetricsService ingest; an Envoy whose certificate comes from another CA gets
//! nothing: the engine refuses the handshake and never sees the node.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use doppel_engine::ingest::{ClusterRegistry, StoreConfig, WindowStore};
use doppel_engine::tls::{ServerTls, TlsFiles};
use doppel_engine::xds::build::{eds_cluster, endpoints, http_listener, weighted_route};
use doppel_engine::xds::{ResourceType, Snapshot, SnapshotCache};
use doppel_filter::names::Variant;
use doppel_tests::envoy_config::render_file;
use doppel_tests::tls_support::{Ca, ENGINE_NAME};
use doppel_tests::xds_support::{Envoy, Upstream, XDS_WAIT, http_get};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The engine's two gRPC servers on mutual TLS, in process.
struct Engine {
    cache: Arc<SnapshotCache>,
    store: Arc<WindowStore>,
    xds: SocketAddr,
    metrics: SocketAddr,
    _stop: Vec<oneshot::Sender<()>>,
}

async fn engine(tls: &ServerTls) -> Engine {
    let cache = Arc::new(SnapshotCache::new());
    // Envoy's own stats of the `primary` cluster count as service `checkout`'s primary.
    let mut registry = ClusterRegistry::new();
    registry.insert("primary", "checkout", Variant::Primary);
    let store = Arc::new(WindowStore::new(StoreConfig::default(), registry));
    let xds_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind xds");
    let metrics_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind metrics");
    let xds = xds_listener.local_addr().expect("xds address");
    let metrics = metrics_listener.local_addr().expect("metrics address");
    let (stop_xds, xds_stopped) = oneshot::channel::<()>();
    let (stop_metrics, metrics_stopped) = oneshot::channel::<()>();
    tokio::spawn(doppel_engine::xds::serve_with(
        xds_listener,
        Arc::clone(&cache),
        Some(tls.clone()),
        async {
            let _ = xds_stopped.await;
        },
    ));
    tokio::spawn(doppel_engine::ingest::serve_with(
        metrics_listener,
        Arc::clone(&store),
        Some(tls.clone()),
        async {
            let _ = metrics_stopped.await;
        },
    ));
    Engine {
        cache,
        store,
        xds,
        metrics,
        _stop: vec![stop_xds, stop_metrics],
    }
}

/// `envoy/ads-tls.yaml` for `engine`, with this Envoy's certificate files and the engine's CA.
fn bootstrap(engine: &Engine, dir: &Path, client: &str, engine_ca: &Path) -> String {
    render_file(
        "ads-tls.yaml",
        &[
            ("admin_port", "0".to_owned()),
            ("xds_port", engine.xds.port().to_string()),
            ("metrics_port", engine.metrics.port().to_string()),
            (
                "client_cert",
                dir.join(format!("{client}.pem")).display().to_string(),
            ),
            (
                "client_key",
                dir.join(format!("{client}-key.pem")).display().to_string(),
            ),
            ("engine_ca", engine_ca.display().to_string()),
        ],
    )
    .expect("ads-tls.yaml renders")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_tls_envoy_takes_config_and_sends_stats_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("doppel test CA");
    let ca_file = ca.write(dir.path(), "ca");
    let server = ca.server(ENGINE_NAME).write(dir.path(), "engine");
    ca.client("envoy-good").write(dir.path(), "good");
    Ca::new("someone else's CA")
        .client("envoy-bad")
        .write(dir.path(), "bad");
    let tls = ServerTls::load(&TlsFiles {
        cert: server.cert,
        key: server.key,
        client_ca: Some(ca_file.clone()),
    })
    .expect("engine TLS loads");
    let engine = engine(&tls).await;
    let upstream = Upstream::start("primary").await.expect("upstream");
    let snapshot = Snapshot::builder(1)
        .cluster(&eds_cluster("primary", Duration::from_secs(1)))
        .endpoints(&endpoints("primary", &[upstream.address]))
        .listener(&http_listener(
            "ingress",
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "ingress_routes",
            Vec::new(),
        ))
        .route(&weighted_route("ingress_routes", &[("primary", 100)]))
        .build()
        .expect("snapshot");
    for node in ["tls-good", "tls-bad"] {
        engine
            .cache
            .set_snapshot(node, snapshot.clone())
            .expect("set snapshot");
    }

    let good = Envoy::start(
        &bootstrap(&engine, dir.path(), "good", &ca_file),
        "tls-good",
    )
    .await
    .expect("envoy with the right certificate");
    let bad = Envoy::start(&bootstrap(&engine, dir.path(), "bad", &ca_file), "tls-bad")
        .await
        .expect("envoy with a stranger's certificate");

    // The good Envoy acknowledges every type over mutual TLS and serves traffic with it.
    let status = tokio::time::timeout(
        XDS_WAIT,
        engine.cache.wait_status("tls-good", |s| {
            s.of(ResourceType::Listener).acked == Some(1)
                && s.of(ResourceType::Route).acked == Some(1)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("the good Envoy never acked:\n{}", good.log_tail()));
    assert_eq!(status.of(ResourceType::Cluster).acked, Some(1));
    let listener = tokio::time::timeout(XDS_WAIT, async {
        loop {
            if let Ok(address) = good.listener_address("ingress").await {
                return address;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("listener bound");
    let reply = http_get(listener, "/over-tls").await.expect("request");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "primary");
    assert!(
        good.stat("cluster.doppel_xds.ssl.handshake")
            .await
            .expect("stat")
            >= 1
    );

    // Its stats arrive on the TLS metrics server (flushed every second): the request above is
    // in service `checkout`'s windows.
    tokio::time::timeout(XDS_WAIT, async {
        while engine
            .store
            .sum("checkout", 0, u64::MAX)
            .ok()
            .flatten()
            .is_none_or(|w| w.primary.requests == 0)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no stats arrived over TLS:\n{}", good.log_tail()));

    // The Envoy with a stranger's certificate: the engine never sees it, its handshakes fail,
    // and it has no listener (it stays waiting for its first config).
    tokio::time::timeout(XDS_WAIT, async {
        while bad
            .stat("cluster.doppel_xds.upstream_cx_connect_fail")
            .await
            .unwrap_or(0)
            + bad
                .stat("cluster.doppel_xds.ssl.connection_error")
                .await
                .unwrap_or(0)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the bad Envoy's handshake never failed:\n{}",
            bad.log_tail()
        )
    });
    let bad_status = engine.cache.status("tls-bad");
    assert!(
        bad_status
            .as_ref()
            .is_none_or(|s| s.streams == 0 && s.of(ResourceType::Listener).acked.is_none()),
        "{bad_status:?}"
    );
    assert!(bad.listener_address("ingress").await.is_err());
}
