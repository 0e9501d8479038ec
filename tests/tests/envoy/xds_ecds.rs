//! ECDS through the real Envoy: an HTTP filter whose config comes over ADS as a
//! `TypedExtensionConfig` (the way the doppel filter's config is pushed) is applied, replaced,
//! and a config Envoy rejects leaves the previous one running. A Lua filter stands in for the
//! Wasm filter so the test needs no built `.wasm`; the transport is the same.

use std::net::SocketAddr;
use std::time::Duration;

use doppel_engine::xds::build::{
    ecds_filter, eds_cluster, endpoints, extension_config, http_listener, weighted_route,
};
use doppel_engine::xds::{ResourceType, Snapshot};
use doppel_tests::xds_support::{AdsMode, AdsRig, Upstream, XDS_WAIT, http_get};
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::filters::http::lua::v3::Lua;
use prost::Name;

const FILTER: &str = "doppel";

fn lua(code: &str) -> Lua {
    Lua {
        default_source_code: Some(DataSource {
            specifier: Some(Specifier::InlineString(code.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tagging(tag: &str) -> Lua {
    lua(&format!(
        "function envoy_on_response(handle)\n  handle:headers():add(\"x-doppel-config\", \"{tag}\")\nend\n"
    ))
}

fn snapshot(version: u64, upstream: SocketAddr, filter: &Lua) -> Snapshot {
    Snapshot::builder(version)
        .cluster(&eds_cluster("primary", Duration::from_secs(1)))
        .endpoints(&endpoints("primary", &[upstream]))
        .listener(&http_listener(
            "ingress",
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "routes",
            vec![ecds_filter(FILTER, &[&Lua::type_url()])],
        ))
        .route(&weighted_route("routes", &[("primary", 100)]))
        .extension_config(&extension_config(FILTER, filter))
        .build()
        .expect("test snapshot builds")
}

/// Polls one request at a time until the response carries `tag`.
async fn wait_tag(rig: &AdsRig, tag: &str) {
    let address = rig
        .envoy
        .listener_address("ingress")
        .await
        .expect("listener bound");
    let deadline = tokio::time::Instant::now() + XDS_WAIT;
    loop {
        let reply = http_get(address, "/").await.expect("request through envoy");
        assert_eq!(reply.status, 200, "{reply:?}");
        if reply.header("x-doppel-config") == Some(tag) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "responses still carry {:?}, want {tag}\n{}",
            reply.header("x-doppel-config"),
            rig.envoy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn filter_config_over_ecds(mode: AdsMode) {
    let upstream = Upstream::start("primary").await.expect("upstream");
    let node = format!("xds-ecds-{mode:?}").to_lowercase();
    let rig = AdsRig::start(mode, &node)
        .await
        .expect("xds server and envoy");
    let ecds_acked = |version| {
        move |s: &doppel_engine::xds::NodeStatus| {
            s.of(ResourceType::ExtensionConfig).acked == Some(version)
        }
    };

    rig.cache
        .set_snapshot(&node, snapshot(1, upstream.address, &tagging("one")))
        .expect("v1");
    rig.wait_status("v1 filter config acknowledged", ecds_acked(1))
        .await;
    wait_tag(&rig, "one").await;

    rig.cache
        .set_snapshot(&node, snapshot(2, upstream.address, &tagging("two")))
        .expect("v2");
    let status = rig
        .wait_status("v2 filter config acknowledged", ecds_acked(2))
        .await;
    assert_eq!(
        status.of(ResourceType::Listener).acked,
        Some(1),
        "only the filter config was pushed"
    );
    wait_tag(&rig, "two").await;

    // v3: Lua that does not compile. Envoy rejects it and keeps running "two".
    let stat = format!("extension_config_discovery.http_filter.{FILTER}.update_rejected");
    let before = rig.envoy.stat(&stat).await.expect("stats");
    rig.cache
        .set_snapshot(&node, snapshot(3, upstream.address, &lua("function (")))
        .expect("v3 is consistent");
    let status = rig
        .wait_status("v3 filter config rejected", |s| {
            s.of(ResourceType::ExtensionConfig).nacked.is_some()
        })
        .await;
    let ecds = status.of(ResourceType::ExtensionConfig);
    let nack = ecds.nacked.clone().expect("nack");
    assert_eq!(nack.version, 3);
    assert!(
        nack.error.contains("script load error"),
        "Envoy's error_detail: {}",
        nack.error
    );
    assert_eq!(ecds.acked, Some(2));
    let after = rig.envoy.stat(&stat).await.expect("stats");
    assert!(after > before, "{stat} went {before} -> {after}");
    let address = rig.envoy.listener_address("ingress").await.expect("bound");
    for _ in 0..10 {
        let reply = http_get(address, "/").await.expect("request");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("x-doppel-config"),
            Some("two"),
            "last good config"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_sotw_filter_config_over_ecds() {
    filter_config_over_ecds(AdsMode::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_delta_filter_config_over_ecds() {
    filter_config_over_ecds(AdsMode::Delta).await;
}
