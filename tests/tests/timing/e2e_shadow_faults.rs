//! The shadow can never harm the primary: with the shadow down, hanging for 10 s, or resetting
//! connections, every client request still succeeds, and the primary's p99 latency with
//! mirroring stays within 1.2x of the same run without it.
//!
//! Each test runs two Envoys side by side on the same upstreams, one mirroring every request
//! and one with the filter in `off` mode, and drives both at the same time in rounds, so that
//! whatever else the machine is doing affects both alike. The primary answers after a fixed
//! 40 ms, which keeps the p99 about the upstream rather than scheduler noise, and the three
//! tests take turns (they measure latency, so they must not compete for the CPU).

use doppel_tests::envoy::Envoy;
use doppel_tests::envoy_config::{Upstreams, inline_bootstrap};
use doppel_tests::envoy_stack::filter_stat;
use doppel_tests::load::{HttpClient, Sample, Spec, drive, failures, percentile};
use doppel_tests::procs::RunDir;
use doppel_tests::upstream::DemoUpstream;
use serde_json::json;

/// Batches per configuration, requests per batch, clients at once.
const ROUNDS: usize = 6;
const BATCH: usize = 150;
const CONCURRENCY: usize = 4;

#[derive(Clone, Copy, Debug)]
enum ShadowFault {
    Down,
    Hang,
    Reset,
}

/// Serialises the tests of this file.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(fault: ShadowFault) {
    let _turn = TURN.lock().await;
    let test = format!("shadow_{fault:?}").to_lowercase();
    let service = match fault {
        ShadowFault::Down => "down",
        ShadowFault::Hang => "hang",
        ShadowFault::Reset => "reset",
    };
    let dir = RunDir::new(&test).expect("run dir");
    let primary = DemoUpstream::start(&dir, "v1", &["--latency-ms", "40"]).expect("primary");
    let shadow_args: &[&str] = match fault {
        ShadowFault::Down => &[],
        ShadowFault::Hang => &["--mode", "hang", "--hang-ms", "10000"],
        ShadowFault::Reset => &["--mode", "reset"],
    };
    let mut shadow = DemoUpstream::start(&dir, "v2", shadow_args).expect("shadow");
    let up = Upstreams {
        primary: primary.port(),
        shadow: shadow.port(),
    };
    let mirror_config = json!({
        "service": service, "mode": "mirror", "percent": 100.0,
        "mirror": {"cluster": "shadow", "timeout_ms": 1000, "max_in_flight": 16}
    });
    let off_config = json!({"service": service, "mode": "off", "percent": 0.0});
    let mirroring = Envoy::start(
        &dir,
        "mirror",
        &inline_bootstrap(&dir, "mirror", "mirror.yaml", up, &mirror_config).expect("render"),
    )
    .await
    .expect("mirroring envoy");
    let plain = Envoy::start(
        &dir,
        "off",
        &inline_bootstrap(&dir, "off", "mirror.yaml", up, &off_config).expect("render"),
    )
    .await
    .expect("plain envoy");
    if let ShadowFault::Down = fault {
        shadow.kill();
    }

    let client = HttpClient::new();
    let (with_front, without_front) = (
        mirroring.listener("ingress").await.expect("listener"),
        plain.listener("ingress").await.expect("listener"),
    );
    // Warm both paths (connections, the VMs) before measuring.
    drive(&client, with_front, 20, CONCURRENCY, |i| {
        Spec::get(format!("/warm/{i}"))
    })
    .await;
    drive(&client, without_front, 20, CONCURRENCY, |i| {
        Spec::get(format!("/warm/{i}"))
    })
    .await;

    let mut with: Vec<Sample> = Vec::new();
    let mut without: Vec<Sample> = Vec::new();
    for round in 0..ROUNDS {
        // Both configurations at the same time, so a stall of the machine hits both alike.
        let (a, b) = tokio::join!(
            drive(&client, with_front, BATCH, CONCURRENCY, move |i| {
                Spec::get(format!("/r{round}/{i}"))
            }),
            drive(&client, without_front, BATCH, CONCURRENCY, move |i| {
                Spec::get(format!("/r{round}/{i}"))
            }),
        );
        with.extend(a);
        without.extend(b);
    }

    for (name, samples) in [("with mirroring", &with), ("without mirroring", &without)] {
        let (failed, why) = failures(samples);
        assert_eq!(
            failed, 0,
            "{fault:?}: {name}: every request succeeds: {why}"
        );
        assert!(
            samples.iter().all(|s| s.version.as_deref() == Some("v1")),
            "{fault:?}: {name}: the primary answered"
        );
    }
    let p99_with = percentile(&with, 0.99);
    let p99_without = percentile(&without, 0.99);
    eprintln!(
        "{fault:?}: p99 with mirroring {p99_with:?}, without {p99_without:?} ({} requests each)",
        with.len()
    );
    assert!(
        p99_with.as_secs_f64() <= 1.2 * p99_without.as_secs_f64(),
        "{fault:?}: p99 with mirroring {p99_with:?} exceeds 1.2x of {p99_without:?} without"
    );

    // The copies really were attempted and really failed the way the fault says.
    let stats = mirroring
        .settled_filter_stats(service)
        .await
        .expect("stats");
    let stat = |name: &str| stats.value(&filter_stat(service, "mirror", name));
    assert!(
        stat("sent") > 0,
        "{fault:?}: copies were sent: {:?}",
        stats.all()
    );
    assert!(
        stat("failed") > 0,
        "{fault:?}: copies failed: {:?}",
        stats.all()
    );
    assert_eq!(
        stat("compared"),
        0,
        "{fault:?}: nothing to compare: {:?}",
        stats.all()
    );
    let shadow_log = shadow.requests().expect("shadow log");
    match fault {
        ShadowFault::Down => assert!(shadow_log.is_empty(), "the shadow was down"),
        ShadowFault::Hang => {
            assert!(!shadow_log.is_empty(), "copies reached the hanging shadow");
            assert!(shadow_log.iter().all(|e| e.outcome == "hang"));
            // At most 16 copies per worker wait at once; the rest are dropped and counted.
            assert!(stat("dropped_in_flight") > 0, "{:?}", stats.all());
        }
        ShadowFault::Reset => {
            assert!(
                !shadow_log.is_empty(),
                "copies reached the resetting shadow"
            );
            assert!(shadow_log.iter().all(|e| e.outcome == "reset"));
        }
    }
    // The plain Envoy never copied anything.
    let plain_stats = plain.settled_filter_stats(service).await.expect("stats");
    assert_eq!(
        plain_stats.value(&filter_stat(service, "mirror", "sent")),
        0,
        "{:?}",
        plain_stats.all()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_shadow_down_never_harms_the_primary() {
    run(ShadowFault::Down).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_shadow_hanging_ten_seconds_never_harms_the_primary() {
    run(ShadowFault::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_shadow_resetting_connections_never_harms_the_primary() {
    run(ShadowFault::Reset).await;
}
