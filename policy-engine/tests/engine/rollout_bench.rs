//! A scripted benchmark (ignored by default; BENCHMARKS.md has the command and figures):
//! rollout decisions pushed to 1,000 ADS streams. Each sample is the time from handing an
//! analysis pass to the controller (machine, redb commit, render, set) to the moment all
//! 1,000 state-of-the-world streams hold the new route configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_engine::policy::parse;
use doppel_engine::rollout::filter_config::FilterKind;
use doppel_engine::rollout::store::Store;
use doppel_engine::rollout::{
    Command, Controller, Input, RolloutEvent, ServiceSetup, Setup, Steering,
};
use doppel_engine::xds::{ResourceType, SnapshotCache};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const STREAMS: usize = 1000;
const CONNECTIONS: usize = 10;
const SAMPLES: usize = 40;

fn policy_text() -> String {
    let mut text = String::from(
        "service: checkout\nprimary:\n  cluster: checkout-v1\nshadow:\n  cluster: checkout-v2\n\
         traffic:\n  mode: split\n  percent: 1\nanalysis:\n  interval: 1s\n  min_sample: 10\n  alpha: 0.01\n\
         rules:\n  - name: errors\n    when: compare.errors.worse\n    action: rollback\nsteps:\n",
    );
    for weight in 1..=SAMPLES + 1 {
        text += &format!("  - weight: {weight}\n    hold: 1ms\n");
    }
    text
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture (see BENCHMARKS.md)"]
async fn rollout_bench_decision_to_1000_ads_streams() {
    let cache = Arc::new(SnapshotCache::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(doppel_engine::xds::serve(
        listener,
        Arc::clone(&cache),
        std::future::pending(),
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    let up = SocketAddr::from(([127, 0, 0, 1], 9));
    let setup = Setup {
        steering: Steering::FullAds,
        access_log: None,
        filter: FilterKind::None,
        nodes: vec!["fleet".to_owned()],
        services: BTreeMap::from([(
            "checkout".to_owned(),
            ServiceSetup {
                policy: parse(&policy_text()).expect("policy"),
                listener: Some(up),
                endpoints: BTreeMap::from([
                    ("checkout-v1".to_owned(), vec![up]),
                    ("checkout-v2".to_owned(), vec![up]),
                ]),
            },
        )]),
    };
    let store = Store::open(&dir.path().join("state.redb")).expect("store");
    let mut controller = Controller::open(setup, store, Arc::clone(&cache)).expect("controller");

    // 1,000 streams of node `fleet`, each watching the route configuration and acking it.
    // Ten connections, a hundred streams multiplexed on each.
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(
            AggregatedDiscoveryServiceClient::connect(format!("http://{address}"))
                .await
                .expect("connect"),
        );
    }
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<u64>();
    for i in 0..STREAMS {
        let seen = seen_tx.clone();
        let mut client = clients[i % CONNECTIONS].clone();
        tokio::spawn(async move {
            let (requests, rx) = mpsc::channel(8);
            let mut responses = client
                .stream_aggregated_resources(ReceiverStream::new(rx))
                .await
                .expect("stream")
                .into_inner();
            let _ = requests
                .send(DiscoveryRequest {
                    node: Some(Node {
                        id: "fleet".to_owned(),
                        ..Default::default()
                    }),
                    type_url: ResourceType::Route.type_url().to_owned(),
                    resource_names: vec!["checkout".to_owned()],
                    ..Default::default()
                })
                .await;
            while let Ok(Some(response)) = responses.message().await {
                let version = response.version_info.parse().unwrap_or(0);
                let _ = requests
                    .send(DiscoveryRequest {
                        version_info: response.version_info.clone(),
                        type_url: response.type_url.clone(),
                        response_nonce: response.nonce.clone(),
                        resource_names: vec!["checkout".to_owned()],
                        ..Default::default()
                    })
                    .await;
                let _ = seen.send(version);
            }
        });
    }
    let mut initial = 0;
    while initial < STREAMS {
        seen_rx.recv().await.expect("stream alive");
        initial += 1;
    }

    let start = Input::Command {
        command: Command::Start {
            version: "v2".into(),
        },
        now_ms: 1,
    };
    controller.apply("checkout", start).expect("start");
    let version = cache
        .snapshot("fleet")
        .map(|s| s.version())
        .expect("version");
    let mut count = 0;
    while count < STREAMS {
        if seen_rx.recv().await.expect("stream alive") >= version {
            count += 1;
        }
    }

    let mut samples = Vec::new();
    for i in 0..SAMPLES as u64 {
        let at_ms = 1_000 * (i + 2);
        let started = Instant::now();
        controller
            .apply("checkout", Input::Event(RolloutEvent::pass(at_ms)))
            .expect("pass");
        let version = cache
            .snapshot("fleet")
            .map(|s| s.version())
            .expect("version");
        let mut count = 0;
        while count < STREAMS {
            if seen_rx.recv().await.expect("stream alive") >= version {
                count += 1;
            }
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "decision -> {STREAMS} ADS streams hold the new routes: p50 {:?}, p99 {:?}, max {:?} ({SAMPLES} samples)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
}
