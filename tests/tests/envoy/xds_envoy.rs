//! The real Envoy on ADS from doppel's xDS server: it serves traffic from a snapshot, follows
//! new route weights, and a snapshot it rejects (NACK) leaves it on the last good config, with
//! the rejection visible in the cache status and in Envoy's own stats. Both SotW and delta.

use std::net::SocketAddr;
use std::time::Duration;

use doppel_engine::xds::build::{eds_cluster, endpoints, http_listener, variant_route};
use doppel_engine::xds::{NodeStatus, ResourceType, Snapshot};
use doppel_tests::xds_support::{AdsMode, AdsRig, Upstream, XDS_WAIT, http_get_with};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::google::protobuf::Duration as PbDuration;

const LISTENER: &str = "ingress";
const ROUTES: &str = "ingress_routes";
const VARIANT_HEADER: &str = "x-doppel-variant";

struct Rig {
    ads: AdsRig,
    primary: Upstream,
    shadow: Upstream,
}

fn snapshot(
    version: u64,
    weights: (u32, u32),
    rig_upstreams: (SocketAddr, SocketAddr),
) -> Snapshot {
    snapshot_with_shadow(
        version,
        weights,
        rig_upstreams,
        eds_cluster("shadow", Duration::from_secs(1)),
    )
}

/// [`snapshot`] with `shadow` as the shadow's cluster.
fn snapshot_with_shadow(
    version: u64,
    weights: (u32, u32),
    rig_upstreams: (SocketAddr, SocketAddr),
    shadow: Cluster,
) -> Snapshot {
    Snapshot::builder(version)
        .cluster(&eds_cluster("primary", Duration::from_secs(1)))
        .cluster(&shadow)
        .endpoints(&endpoints("primary", &[rig_upstreams.0]))
        .endpoints(&endpoints("shadow", &[rig_upstreams.1]))
        .listener(&http_listener(
            LISTENER,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ROUTES,
            Vec::new(),
        ))
        .route(&variant_route(
            ROUTES,
            Some(VARIANT_HEADER),
            "shadow",
            &[("primary", weights.0), ("shadow", weights.1)],
            None,
            None,
        ))
        .build()
        .expect("test snapshot builds")
}

impl Rig {
    async fn start(mode: AdsMode) -> Rig {
        let primary = Upstream::start("primary").await.expect("primary upstream");
        let shadow = Upstream::start("shadow").await.expect("shadow upstream");
        let node = format!("xds-test-{mode:?}").to_lowercase();
        let ads = AdsRig::start(mode, &node)
            .await
            .expect("xds server and envoy start");
        Rig {
            ads,
            primary,
            shadow,
        }
    }

    fn upstreams(&self) -> (SocketAddr, SocketAddr) {
        (self.primary.address, self.shadow.address)
    }

    /// Serves `weights` as snapshot `version` and waits until Envoy has acknowledged the routes
    /// and routes by them.
    async fn push(&self, version: u64, weights: (u32, u32)) {
        self.ads
            .cache
            .set_snapshot(&self.ads.node, snapshot(version, weights, self.upstreams()))
            .expect("consistent snapshot");
        self.ads
            .wait_status(&format!("v{version} routes acknowledged"), |s| {
                acked(s, ResourceType::Route) == Some(version)
            })
            .await;
        self.wait_weights(u64::from(weights.0), u64::from(weights.1))
            .await;
    }

    /// Waits until Envoy's config dump shows these weights, then lets workers catch up.
    async fn wait_weights(&self, primary: u64, shadow: u64) {
        let want = vec![
            ("primary".to_owned(), primary),
            ("shadow".to_owned(), shadow),
        ];
        let deadline = tokio::time::Instant::now() + XDS_WAIT;
        loop {
            let weights = self.ads.envoy.route_weights().await.expect("config dump");
            if weights == want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "config dump shows {weights:?}, want {want:?}\n{}",
                self.ads.envoy.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Waits until Envoy's stat `name` reads `value`.
    async fn wait_stat(&self, name: &str, value: u64) {
        let deadline = tokio::time::Instant::now() + XDS_WAIT;
        loop {
            let now = self.ads.envoy.stat(name).await.expect("stats");
            if now == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stays {now}, want {value}\n{}",
                self.ads.envoy.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `n` requests through Envoy; returns the (primary, shadow) hits they caused.
    async fn traffic(&self, n: u64) -> (u64, u64) {
        self.traffic_with(n, &[]).await
    }

    /// Sends `n` requests with `headers` through Envoy; returns the (primary, shadow) hits.
    async fn traffic_with(&self, n: u64, headers: &[(&str, &str)]) -> (u64, u64) {
        let address = self
            .ads
            .envoy
            .listener_address(LISTENER)
            .await
            .expect("listener bound");
        let before = (self.primary.hits(), self.shadow.hits());
        for i in 0..n {
            let reply = http_get_with(address, &format!("/r/{i}"), headers)
                .await
                .expect("request through envoy");
            assert_eq!(reply.status, 200, "request {i} answered {reply:?}");
        }
        let hits = (
            self.primary.hits() - before.0,
            self.shadow.hits() - before.1,
        );
        assert_eq!(hits.0 + hits.1, n, "every request reached an upstream");
        hits
    }
}

fn acked(status: &NodeStatus, kind: ResourceType) -> Option<u64> {
    status.of(kind).acked
}

async fn weights_then_nack_then_recovery(mode: AdsMode) {
    let rig = Rig::start(mode).await;
    let node = rig.ads.node.clone();

    // v1: everything to the primary.
    rig.ads
        .cache
        .set_snapshot(&node, snapshot(1, (100, 0), rig.upstreams()))
        .expect("v1 consistent");
    rig.ads
        .wait_status("v1 acknowledged", |s| {
            ResourceType::ALL
                .iter()
                .filter(|k| **k != ResourceType::ExtensionConfig)
                .all(|k| acked(s, *k) == Some(1))
        })
        .await;
    rig.wait_weights(100, 0).await;
    assert_eq!(rig.traffic(40).await, (40, 0));
    // Requests the filter marked for the shadow take the variant-header route.
    assert_eq!(
        rig.traffic_with(10, &[(VARIANT_HEADER, "shadow")]).await,
        (0, 10)
    );

    // v2: half and half. Only the routes changed, so only RDS moves to version 2.
    let pushed = std::time::Instant::now();
    rig.ads
        .cache
        .set_snapshot(&node, snapshot(2, (50, 50), rig.upstreams()))
        .expect("v2 consistent");
    let status = rig
        .ads
        .wait_status("v2 routes acknowledged", |s| {
            acked(s, ResourceType::Route) == Some(2)
        })
        .await;
    // A figure for the curious, not a target: set_snapshot to Envoy's ACK, on a debug build.
    eprintln!(
        "{mode:?}: new weights acknowledged by envoy {:?} after set_snapshot",
        pushed.elapsed()
    );
    assert_eq!(
        acked(&status, ResourceType::Cluster),
        Some(1),
        "clusters not resent"
    );
    rig.wait_weights(50, 50).await;
    let (primary, shadow) = rig.traffic(200).await;
    assert!(
        primary >= 60 && shadow >= 60,
        "50/50 split served {primary}/{shadow}"
    );

    // v3: the shadow cluster gets a connect timeout Envoy refuses. The snapshot is consistent
    // (every reference resolves), so the cache serves it and Envoy NACKs it.
    let rejected_before = rig
        .ads
        .envoy
        .stat("cluster_manager.cds.update_rejected")
        .await
        .expect("stats");
    let mut bad = eds_cluster("shadow", Duration::from_secs(1));
    bad.connect_timeout = Some(PbDuration {
        seconds: -5,
        nanos: 0,
    });
    rig.ads
        .cache
        .set_snapshot(
            &node,
            snapshot_with_shadow(3, (50, 50), rig.upstreams(), bad),
        )
        .expect("v3 consistent");
    let status = rig
        .ads
        .wait_status("v3 clusters rejected", |s| {
            s.of(ResourceType::Cluster).nacked.is_some()
        })
        .await;
    let cds = status.of(ResourceType::Cluster);
    let nack = cds.nacked.clone().expect("nack recorded");
    assert_eq!(nack.version, 3);
    assert!(
        nack.error.contains("Expected positive duration"),
        "Envoy's error_detail names the problem: {}",
        nack.error
    );
    assert!(cds.is_rejecting());
    assert_eq!(cds.acked, Some(1), "Envoy stays on the last good clusters");
    let rejected_after = rig
        .ads
        .envoy
        .stat("cluster_manager.cds.update_rejected")
        .await
        .expect("stats");
    assert!(
        rejected_after > rejected_before,
        "cluster_manager.cds.update_rejected went {rejected_before} -> {rejected_after}"
    );
    // Envoy keeps serving with the last good config: both variants still answer.
    let (primary, shadow) = rig.traffic(200).await;
    assert!(
        primary >= 60 && shadow >= 60,
        "after the NACK, 50/50 served {primary}/{shadow}"
    );

    // The cache serves the last good clusters again, under a new version; Envoy takes them.
    let restored = rig.ads.cache.restore_last_good(&node).expect("restore");
    assert_eq!(restored, 4);
    let status = rig
        .ads
        .wait_status("restored clusters acknowledged", |s| {
            acked(s, ResourceType::Cluster) == Some(4)
        })
        .await;
    assert!(!status.of(ResourceType::Cluster).is_rejecting());

    // v5: everything to the shadow.
    rig.push(5, (0, 100)).await;
    assert_eq!(rig.traffic(40).await, (0, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_sotw_envoy_follows_weights_and_survives_a_nack() {
    weights_then_nack_then_recovery(AdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_delta_envoy_follows_weights_and_survives_a_nack() {
    weights_then_nack_then_recovery(AdsMode::Delta).await;
}

/// Envoy keeps serving its last config while the engine is away, reconnects to a restarted
/// engine that serves the same snapshot version, and then takes new pushes.
async fn survives_an_engine_restart(mode: AdsMode) {
    let mut rig = Rig::start(mode).await;
    let node = rig.ads.node.clone();
    rig.push(7, (50, 50)).await;

    rig.ads.stop_xds().await;
    rig.wait_stat("control_plane.connected_state", 0).await;
    let (primary, shadow) = rig.traffic(100).await;
    assert!(
        primary >= 25 && shadow >= 25,
        "without the engine, 50/50 served {primary}/{shadow}"
    );

    let cache = rig.ads.restart_xds().await.expect("restart");
    cache
        .set_snapshot(&node, snapshot(7, (50, 50), rig.upstreams()))
        .expect("v7 again");
    rig.ads
        .wait_status("envoy reconnected", |s| s.streams == 1)
        .await;
    rig.wait_stat("control_plane.connected_state", 1).await;
    rig.push(8, (0, 100)).await;
    assert_eq!(rig.traffic(40).await, (0, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_sotw_envoy_survives_an_engine_restart() {
    survives_an_engine_restart(AdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_delta_envoy_survives_an_engine_restart() {
    survives_an_engine_restart(AdsMode::Delta).await;
}
