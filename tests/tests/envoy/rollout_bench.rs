//! A scripted benchmark (ignored by default; BENCHMARKS.md has the command and figures): the
//! time from an analysis decision handed to the rollout controller (machine, redb commit,
//! render, set) to the real Envoy acknowledging the route configuration with the new weights
//! (Envoy acks RDS once the new route table is in force).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_engine::policy::parse;
use doppel_engine::rollout::filter_config::FilterKind;
use doppel_engine::rollout::store::Store;
use doppel_engine::rollout::{
    Command, Controller, Input, RolloutEvent, ServiceSetup, Setup, Steering,
};
use doppel_engine::xds::ResourceType;
use doppel_tests::rollout_support::policy_yaml;
use doppel_tests::xds_support::{AdsMode, AdsRig, Upstream};

const SAMPLES: usize = 60;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture (see BENCHMARKS.md)"]
async fn rollout_bench_decision_to_envoy_serving_new_weights() {
    let primary = Upstream::start("primary").await.expect("upstream");
    let shadow = Upstream::start("shadow").await.expect("upstream");
    let rig = AdsRig::start(AdsMode::Sotw, "bench").await.expect("rig");
    let steps: Vec<(f64, &str)> = (1..=SAMPLES + 1).map(|w| (w as f64, "1ms")).collect();
    let setup = Setup {
        steering: Steering::FullAds,
        access_log: None,
        filter: FilterKind::None,
        nodes: vec![rig.node.clone()],
        services: BTreeMap::from([(
            "checkout".to_owned(),
            ServiceSetup {
                policy: parse(&policy_yaml(&steps)).expect("policy"),
                listener: Some("127.0.0.1:0".parse().expect("address")),
                endpoints: BTreeMap::from([
                    ("checkout-v1".to_owned(), vec![primary.address]),
                    ("checkout-v2".to_owned(), vec![shadow.address]),
                ]),
            },
        )]),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.redb")).expect("store");
    let mut controller = Controller::open(setup, store, Arc::clone(&rig.cache)).expect("open");
    let start = Input::Command {
        command: Command::Start {
            version: "v2".into(),
        },
        now_ms: 1,
    };
    controller.apply("checkout", start).expect("start");
    let acked = |version: u64| {
        move |s: &doppel_engine::xds::NodeStatus| s.of(ResourceType::Route).acked >= Some(version)
    };
    let first = rig.cache.next_version(&rig.node) - 1;
    rig.wait_status("first routes", acked(first)).await;

    let mut samples = Vec::new();
    for i in 0..SAMPLES as u64 {
        let started = Instant::now();
        controller
            .apply(
                "checkout",
                Input::Event(RolloutEvent::pass(1_000 * (i + 2))),
            )
            .expect("pass");
        let version = rig.cache.next_version(&rig.node) - 1;
        rig.wait_status("new weights acknowledged", acked(version))
            .await;
        samples.push(started.elapsed());
    }
    // The last weights are in Envoy's config dump.
    let weights = rig.envoy.route_weights().await.expect("config dump");
    let shadow_units = 100 * (SAMPLES as u64 + 1);
    assert!(
        weights.contains(&("checkout-v2".to_owned(), shadow_units)),
        "{weights:?}"
    );
    samples.sort();
    println!(
        "decision -> Envoy serving the new weights (RDS ack): p50 {:?}, p99 {:?}, max {:?} ({SAMPLES} samples)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
}
