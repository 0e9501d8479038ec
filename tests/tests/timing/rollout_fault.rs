//! Issue 5's must-show, end to end and closed-loop: Envoy over ADS streams its cluster stats to
//! `doppel serve`, whose analysis loop judges primary against shadow every second. A shadow
//! that starts answering 20% errors mid-rollout is rolled back by the engine itself (nothing
//! is posted to its API): traffic to it stops within two analysis intervals of the first
//! window holding the fault, and no client request that went to the primary failed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use doppel_tests::rollout_support::{Engine, eventually, free_port};
use doppel_tests::xds_support::{
    AdsMode, Envoy, XDS_WAIT, http_get, render_ads_bootstrap_with_metrics,
};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

const NODE: &str = "rollout-fault";
/// Envoy's `stats_flush_interval` in envoy/ads.yaml.
const FLUSH: Duration = Duration::from_secs(1);
/// The policy's analysis interval; `doppel serve` makes its windows this long too.
const INTERVAL: Duration = Duration::from_secs(1);
/// Past the decision: the loop's grace after a window's end (0.1 s), the xDS push reaching
/// Envoy, and this test's 100 ms polling.
const PUSH_SLACK: Duration = Duration::from_secs(1);
/// Concurrent clients.
const CLIENTS: usize = 4;

const POLICY: &str = "service: checkout\nprimary:\n  cluster: checkout-v1\nshadow:\n  cluster: checkout-v2\n\
traffic:\n  mode: split\n  percent: 1\nanalysis:\n  interval: 1s\n  min_sample: 20\n  alpha: 0.01\n\
rules:\n  - name: shadow-errors\n    when: compare.errors.worse\n    action: rollback\n\
steps:\n  - weight: 50\n    hold: 1h\n  - weight: 100\n    hold: 1h\n";

/// An upstream that answers `200 name`, or, once `fail` is set, `500 name` to every fifth
/// request (exactly 20%); counts what it served.
struct FaultyUpstream {
    address: SocketAddr,
    hits: Arc<AtomicU64>,
    fail: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyUpstream {
    async fn start(name: &'static str) -> std::io::Result<FaultyUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let hits = Arc::new(AtomicU64::new(0));
        let fail = Arc::new(AtomicBool::new(false));
        let faulty = Arc::new(AtomicU64::new(0));
        let (counter, switch) = (Arc::clone(&hits), Arc::clone(&fail));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, switch, faulty) = (
                    Arc::clone(&counter),
                    Arc::clone(&switch),
                    Arc::clone(&faulty),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let error = switch.load(Ordering::SeqCst)
                            && faulty.fetch_add(1, Ordering::SeqCst) % 5 == 0;
                        async move {
                            let mut response = hyper::Response::new(Full::new(Bytes::from_static(
                                name.as_bytes(),
                            )));
                            if error {
                                *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FaultyUpstream {
            address,
            hits,
            fail,
            task,
        })
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the clients saw, by the upstream that answered.
#[derive(Default)]
struct Tally {
    primary_ok: AtomicU64,
    primary_failed: AtomicU64,
    shadow_ok: AtomicU64,
    shadow_failed: AtomicU64,
    /// Failures no upstream answered (Envoy's own 5xx, connection errors).
    unattributed: AtomicU64,
}

/// `CLIENTS` loops of GETs through `address` until `stop` is set.
fn clients(
    address: SocketAddr,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|_| {
            let (tally, stop) = (Arc::clone(tally), Arc::clone(stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let counter = match http_get(address, "/").await {
                        Ok(r) if r.body == "primary" && r.status == 200 => &tally.primary_ok,
                        Ok(r) if r.body == "primary" => &tally.primary_failed,
                        Ok(r) if r.body == "shadow" && r.status == 200 => &tally.shadow_ok,
                        Ok(r) if r.body == "shadow" => &tally.shadow_failed,
                        _ => &tally.unattributed,
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect()
}

fn write_config(dir: &Path, primary: SocketAddr, shadow: SocketAddr) {
    std::fs::write(dir.join("policy.yaml"), POLICY).expect("policy file");
    let config = format!(
        "steering: full_ads\nfilter: {{ kind: none }}\nnodes: [{NODE}]\nservices:\n  - policy: policy.yaml\n    listener: 127.0.0.1:0\n    endpoints:\n      checkout-v1: [\"{primary}\"]\n      checkout-v2: [\"{shadow}\"]\n"
    );
    std::fs::write(dir.join("serve.yaml"), config).expect("serve config");
}

/// The (checkout-v1, checkout-v2) weights in Envoy's config dump, once both are there.
async fn weights(envoy: &Envoy) -> Option<(u64, u64)> {
    let all = envoy.route_weights().await.ok()?;
    let of = |name: &str| all.iter().find(|(n, _)| n == name).map(|(_, w)| *w);
    Some((of("checkout-v1")?, of("checkout-v2")?))
}

fn phase(status: &Value) -> String {
    status["rollout"]["phase"]["phase"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_shadow_failing_mid_rollout_is_rolled_back_by_the_analysis_loop() {
    let primary = FaultyUpstream::start("primary").await.expect("primary");
    let shadow = FaultyUpstream::start("shadow").await.expect("shadow");
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), primary.address, shadow.address);
    let xds_port = free_port();
    let engine = Engine::start(
        dir.path(),
        &dir.path().join("serve.yaml"),
        &dir.path().join("state.redb"),
        xds_port,
    )
    .expect("doppel serve");
    let bootstrap =
        render_ads_bootstrap_with_metrics(xds_port, engine.metrics.port(), AdsMode::Sotw)
            .expect("bootstrap");
    let envoy = Envoy::start(&bootstrap, NODE).await.expect("envoy");
    eventually(XDS_WAIT, "all traffic on the primary", || async {
        (weights(&envoy).await == Some((10_000, 0))).then_some(())
    })
    .await;

    engine.start_rollout();
    eventually(XDS_WAIT, "step 1 at 50%", || async {
        (weights(&envoy).await == Some((5_000, 5_000))).then_some(())
    })
    .await;

    let address = envoy.listener_address("checkout").await.expect("listener");
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = clients(address, &tally, &stop);

    // A healthy shadow under analysis for a while: no rule fires, the rollout stays at 50%.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = engine.status("checkout");
    assert_eq!(
        phase(&status),
        "shadowing",
        "{status:#}\n{}",
        engine.log_tail()
    );
    assert!(
        shadow.hits() > 50 && tally.shadow_failed.load(Ordering::SeqCst) == 0,
        "the healthy shadow served {} requests",
        shadow.hits()
    );

    // The fault: from now on every fifth shadow answer is a 500.
    let fault_ms = unix_ms();
    let fault = Instant::now();
    shadow.fail.store(true, Ordering::SeqCst);

    // The first flush holding a fault reaches the engine within FLUSH and lands in a window
    // that ends within one more INTERVAL (windows are INTERVAL long); the analysis looks at
    // that window's end and once more an INTERVAL later. Rolled back by the second look,
    // pushed to Envoy within PUSH_SLACK.
    let bound = FLUSH + INTERVAL + 2 * INTERVAL + PUSH_SLACK;
    let stopped_after = eventually(bound + Duration::from_secs(10), "shadow weight 0", || {
        let envoy = &envoy;
        async move { (weights(envoy).await == Some((10_000, 0))).then(|| fault.elapsed()) }
    })
    .await;
    // Requests already routed to the shadow finish; after that it gets none.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shadow_hits = shadow.hits();
    let primary_hits = primary.hits();
    tokio::time::sleep(2 * INTERVAL).await;
    assert_eq!(shadow.hits(), shadow_hits, "the shadow still gets traffic");
    assert!(
        primary.hits() > primary_hits + 20,
        "the clients kept sending"
    );
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("client task");
    }

    let status = engine.status("checkout");
    let rollback = status["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|e| e["phase"] == "rolled_back"))
        .cloned()
        .unwrap_or(Value::Null);
    let decided_ms = rollback["input"]["at_ms"].as_u64().unwrap_or(u64::MAX);
    eprintln!(
        "fault at {fault_ms}; rollback decided at window end {decided_ms} (+{} ms); \
         Envoy at weight 0 after {stopped_after:?}; {rollback}",
        decided_ms.saturating_sub(fault_ms)
    );
    assert_eq!(phase(&status), "rolled_back", "{status:#}");
    assert_eq!(rollback["input"]["rule"], "shadow-errors", "{rollback}");
    let note = rollback["note"].as_str().unwrap_or("");
    assert!(note.contains("compare.errors.worse"), "explained: {note}");
    // The decision comes from a window that ended by the second look.
    let decision_bound = u64::try_from((FLUSH + 2 * INTERVAL).as_millis()).unwrap_or(u64::MAX);
    assert!(
        decided_ms <= fault_ms + decision_bound,
        "decided {} ms after the fault, bound {decision_bound} ms",
        decided_ms.saturating_sub(fault_ms)
    );
    assert!(
        stopped_after <= bound,
        "traffic to the shadow stopped {stopped_after:?} after the fault, bound {bound:?}\n{}",
        engine.log_tail()
    );

    let wait = engine.cli(&["wait", "checkout", "--timeout", "5s"]);
    assert_eq!(
        wait.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&wait.stdout)
    );

    // Every request that went to the primary succeeded; every failure came from the shadow.
    let primary_ok = tally.primary_ok.load(Ordering::SeqCst);
    assert_eq!(tally.primary_failed.load(Ordering::SeqCst), 0);
    assert_eq!(tally.unattributed.load(Ordering::SeqCst), 0);
    assert_eq!(
        primary_ok,
        primary.hits(),
        "each primary hit reached a client as a 200"
    );
    assert!(
        tally.shadow_failed.load(Ordering::SeqCst) > 0,
        "the fault was seen"
    );
    assert_eq!(
        tally.shadow_ok.load(Ordering::SeqCst) + tally.shadow_failed.load(Ordering::SeqCst),
        shadow.hits()
    );
}
