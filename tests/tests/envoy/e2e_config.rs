//! A filter config that fails validation is refused by Envoy: at start-up Envoy does not start,
//! and a bad update delivered by ECDS is rejected while the previous config stays in force.

use std::time::Duration;

use doppel_tests::envoy::Envoy;
use doppel_tests::envoy_config::{
    Upstreams, ecds_bootstrap, inline_bootstrap, write_ecds_resource,
};
use doppel_tests::load::{HttpClient, Sample, Spec, drive, failures};
use doppel_tests::procs::RunDir;
use doppel_tests::upstream::DemoUpstream;
use serde_json::json;

const ECDS: &str = "extension_config_discovery.http_filter.doppel.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_envoy_refuses_to_start_with_an_invalid_filter_config() {
    let dir = RunDir::new("config_refused_at_start").expect("run dir");
    let up = Upstreams {
        primary: 9,
        shadow: 9,
    };
    let bad = json!({"service": "refused", "mode": "split", "percent": 120.0});
    let bootstrap = inline_bootstrap(&dir, "bad", "split.yaml", up, &bad).expect("render");
    let log = Envoy::start_refused(&dir, "bad", &bootstrap)
        .await
        .expect("Envoy refuses the config");
    assert!(
        log.contains("doppel: invalid config: percent: 120 is outside [0, 100]"),
        "the log names the field and why:\n{log}"
    );
}

/// Which upstream answered each request.
fn versions(samples: &[Sample]) -> Vec<&str> {
    samples
        .iter()
        .map(|s| s.version.as_deref().unwrap_or("none"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_a_rejected_ecds_update_leaves_the_previous_config_in_force() {
    let dir = RunDir::new("config_ecds").expect("run dir");
    let primary = DemoUpstream::start(&dir, "v1", &[]).expect("primary");
    let shadow = DemoUpstream::start(&dir, "v2", &[]).expect("shadow");
    let up = Upstreams {
        primary: primary.port(),
        shadow: shadow.port(),
    };
    let ecds_dir = dir.join("ecds");
    let everyone = json!({"service": "ecds", "mode": "split", "percent": 100.0});
    write_ecds_resource(&ecds_dir, "1", &everyone).expect("first config");
    let bootstrap = ecds_bootstrap(&dir, "ecds", up, &ecds_dir).expect("render");
    let envoy = Envoy::start(&dir, "ecds", &bootstrap).await.expect("envoy");
    let front = envoy.listener("ingress").await.expect("listener");
    let client = HttpClient::new();
    let stat = |name: &'static str| {
        let envoy = &envoy;
        async move {
            let stats = envoy.stats(&format!("^{}", ECDS.replace('.', "\\."))).await;
            stats.expect("stats").value(&format!("{ECDS}{name}"))
        }
    };
    assert_eq!(stat("update_success").await, 1, "the first config loaded");

    // Version 1 sends everyone to the shadow.
    let samples = drive(&client, front, 50, 4, |i| Spec::get(format!("/a/{i}"))).await;
    assert_eq!(failures(&samples).0, 0);
    assert!(
        versions(&samples).iter().all(|v| *v == "v2"),
        "{:?}",
        versions(&samples)
    );

    // Version 2 is invalid: Envoy rejects it and keeps version 1.
    let bad = json!({"service": "ecds", "mode": "split", "percent": 120.0});
    write_ecds_resource(&ecds_dir, "2", &bad).expect("bad config");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stat("update_rejected").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Envoy never rejected the update; log:\n{}",
            envoy.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stat("update_success").await,
        1,
        "the bad update did not count as applied"
    );
    assert!(
        envoy
            .log_tail(200)
            .contains("doppel: invalid config: percent: 120 is outside [0, 100]"),
        "the log says why"
    );
    let samples = drive(&client, front, 50, 4, |i| Spec::get(format!("/b/{i}"))).await;
    assert_eq!(failures(&samples).0, 0);
    assert!(
        versions(&samples).iter().all(|v| *v == "v2"),
        "the previous config stays in force: {:?}",
        versions(&samples)
    );

    // Version 3 is valid again and takes effect: nobody goes to the shadow now.
    let nobody = json!({"service": "ecds", "mode": "split", "percent": 0.0});
    write_ecds_resource(&ecds_dir, "3", &nobody).expect("good config");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stat("update_success").await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Envoy never applied version 3; log:\n{}",
            envoy.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let samples = drive(&client, front, 50, 4, |i| Spec::get(format!("/c/{i}"))).await;
    assert_eq!(failures(&samples).0, 0);
    assert!(
        versions(&samples).iter().all(|v| *v == "v1"),
        "version 3 is in force: {:?}",
        versions(&samples)
    );
    let dump = envoy.config_dump().await.expect("config dump");
    let ecds = dump["configs"]
        .as_array()
        .and_then(|c| {
            c.iter().find(|c| {
                c["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("EcdsConfigDump"))
            })
        })
        .expect("an ECDS section in /config_dump");
    assert_eq!(ecds["ecds_filters"][0]["version_info"], "3", "{ecds}");
}
