//! The snapshot cache on its own: consistency refusals, versions, sharing of unchanged types.

use std::net::SocketAddr;
use std::time::Duration;

use doppel_engine::xds::build::{
    ecds_filter, eds_cluster, endpoints, extension_config, http_listener, weighted_route,
};
use doppel_engine::xds::{ResourceType, Snapshot, SnapshotCache, SnapshotError};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;

const NODE: &str = "node-a";

fn upstream() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// A consistent snapshot: listener -> route -> weighted primary/shadow, both over EDS.
fn full(version: u64, shadow_weight: u32) -> Snapshot {
    Snapshot::builder(version)
        .cluster(&eds_cluster("primary", Duration::from_secs(1)))
        .cluster(&eds_cluster("shadow", Duration::from_secs(1)))
        .endpoints(&endpoints("primary", &[upstream()]))
        .endpoints(&endpoints("shadow", &[upstream()]))
        .listener(&http_listener("ingress", upstream(), "routes", Vec::new()))
        .route(&weighted_route(
            "routes",
            &[("primary", 100 - shadow_weight), ("shadow", shadow_weight)],
        ))
        .build()
        .expect("fixture builds")
}

#[test]
fn xds_refuses_a_route_to_a_missing_cluster() {
    let cache = SnapshotCache::new();
    let snapshot = Snapshot::builder(1)
        .cluster(&eds_cluster("primary", Duration::from_secs(1)))
        .endpoints(&endpoints("primary", &[upstream()]))
        .route(&weighted_route(
            "routes",
            &[("primary", 90), ("shadow", 10)],
        ))
        .build()
        .expect("builds");
    let error = cache.set_snapshot(NODE, snapshot).expect_err("refused");
    assert_eq!(
        error,
        SnapshotError::Dangling {
            kind: ResourceType::Route,
            name: "routes".into(),
            missing_kind: ResourceType::Cluster,
            missing: "shadow".into(),
        }
    );
    assert_eq!(
        error.to_string(),
        "rds resource `routes` refers to cds resource `shadow`, which is not in the snapshot"
    );
    assert!(cache.snapshot(NODE).is_none(), "nothing was set");
}

#[test]
fn xds_refuses_an_eds_cluster_without_endpoints() {
    let snapshot = Snapshot::builder(1)
        .cluster(&eds_cluster("primary", Duration::from_secs(1)))
        .build()
        .expect("builds");
    let error = SnapshotCache::new()
        .set_snapshot(NODE, snapshot)
        .expect_err("refused");
    assert!(
        matches!(&error, SnapshotError::Dangling { missing_kind: ResourceType::Endpoint, missing, .. } if missing == "primary"),
        "{error}"
    );
}

#[test]
fn xds_refuses_a_listener_without_its_route_config_or_filter_config() {
    let cache = SnapshotCache::new();
    let no_routes = Snapshot::builder(1)
        .listener(&http_listener("ingress", upstream(), "routes", Vec::new()))
        .build()
        .expect("builds");
    let error = cache.set_snapshot(NODE, no_routes).expect_err("refused");
    assert!(
        matches!(&error, SnapshotError::Dangling { kind: ResourceType::Listener, missing_kind: ResourceType::Route, missing, .. } if missing == "routes"),
        "{error}"
    );

    let router_type = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    let filter = ecds_filter("doppel", &[router_type]);
    let no_filter_config = Snapshot::builder(2)
        .listener(&http_listener(
            "ingress",
            upstream(),
            "routes",
            vec![filter.clone()],
        ))
        .route(&weighted_route("routes", &[]))
        .build()
        .expect("builds");
    let error = cache
        .set_snapshot(NODE, no_filter_config)
        .expect_err("refused");
    assert!(
        matches!(&error, SnapshotError::Dangling { missing_kind: ResourceType::ExtensionConfig, missing, .. } if missing == "doppel"),
        "{error}"
    );

    let with_filter_config = Snapshot::builder(3)
        .listener(&http_listener(
            "ingress",
            upstream(),
            "routes",
            vec![filter],
        ))
        .route(&weighted_route("routes", &[]))
        .extension_config(&extension_config("doppel", &Router::default()))
        .build()
        .expect("builds");
    cache
        .set_snapshot(NODE, with_filter_config)
        .expect("consistent");
}

#[test]
fn xds_refuses_duplicates_and_nameless_resources() {
    let duplicate = Snapshot::builder(1)
        .cluster(&eds_cluster("primary", Duration::from_secs(1)))
        .cluster(&eds_cluster("primary", Duration::from_secs(2)))
        .build()
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), "duplicate");
    let nameless = Snapshot::builder(1)
        .cluster(&eds_cluster("", Duration::from_secs(1)))
        .build()
        .expect_err("nameless");
    assert_eq!(
        nameless,
        SnapshotError::EmptyName {
            kind: ResourceType::Cluster
        }
    );
}

#[test]
fn xds_versions_must_grow_per_node() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, full(5, 0)).expect("first");
    let error = cache
        .set_snapshot(NODE, full(5, 10))
        .expect_err("same version");
    assert_eq!(error.code(), "stale_version");
    assert!(
        cache.set_snapshot(NODE, full(4, 10)).is_err(),
        "older version"
    );
    assert_eq!(cache.snapshot(NODE).map(|s| s.version()), Some(5));
    // Another node has its own sequence.
    cache
        .set_snapshot("node-b", full(1, 0))
        .expect("other node");
    assert_eq!(cache.next_version(NODE), 6);
    assert_eq!(cache.next_version("node-b"), 2);
    assert_eq!(cache.next_version("unknown"), 1);
    cache.set_snapshot(NODE, full(6, 10)).expect("grows");
    assert_eq!(cache.status(NODE).and_then(|s| s.version), Some(6));
}

#[test]
fn xds_unchanged_types_keep_their_version_and_shared_copy() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(NODE, full(1, 0)).expect("v1");
    let first = cache.snapshot(NODE).expect("set");
    cache.set_snapshot(NODE, full(2, 50)).expect("v2");
    let second = cache.snapshot(NODE).expect("set");
    for kind in [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
    ] {
        assert_eq!(second.resources(kind).version(), 1, "{kind} unchanged");
        assert!(std::sync::Arc::ptr_eq(
            first.resources(kind),
            second.resources(kind)
        ));
    }
    assert_eq!(second.resources(ResourceType::Route).version(), 2);
}

#[test]
fn xds_content_versions_follow_content() {
    let a = full(1, 0);
    let b = full(2, 0);
    let c = full(3, 50);
    let version = |s: &Snapshot| {
        s.resources(ResourceType::Route)
            .get("routes")
            .map(|r| r.version().to_owned())
    };
    assert_eq!(version(&a), version(&b));
    assert_ne!(version(&a), version(&c));
}

#[tokio::test]
async fn xds_setting_a_snapshot_wakes_status_watchers() {
    let cache = std::sync::Arc::new(SnapshotCache::new());
    let waiter = {
        let cache = std::sync::Arc::clone(&cache);
        tokio::spawn(async move { cache.wait_status(NODE, |s| s.version == Some(3)).await })
    };
    tokio::task::yield_now().await;
    cache.set_snapshot(NODE, full(3, 0)).expect("set");
    let status = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("joined");
    assert_eq!(status.version, Some(3));
}
