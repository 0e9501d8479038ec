//! The dashboard in a real browser: headless Chromium (Debian's, over WebDriver) loads the
//! dashboard of a running `doppel serve` while a real Envoy carries traffic to two demo
//! upstreams. After a healthy phase the shadow answers 20% errors; the page's charts fill with
//! data, the engine's rollback appears in its decision timeline with the rule and its reason,
//! the rule's row says it fired, and a button pressed without the token is refused. A
//! screenshot goes to `tests/artifacts/dashboard-rollback.png`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use doppel_tests::browser::Browser;
use doppel_tests::load::HttpClient;
use doppel_tests::procs::{RunDir, workspace_root};
use doppel_tests::rollout_support::{Engine, eventually, free_port};
use doppel_tests::upstream::DemoUpstream;
use doppel_tests::xds_support::{
    AdsMode, Envoy, XDS_WAIT, http_get, render_ads_bootstrap_with_metrics,
};
use serde_json::Value;

const NODE: &str = "dashboard-browser";

const POLICY: &str = r#"service: checkout
primary:
  cluster: checkout-v1
shadow:
  cluster: checkout-v2
traffic:
  mode: split
  percent: 1
analysis:
  interval: 1s
  min_sample: 20
  alpha: 0.01
rules:
  - name: shadow-errors
    when: compare.errors.worse
    action: rollback
  - name: shadow-error-rate
    when: shadow.error_rate > 0.05
    action: alert
steps:
  - weight: 50
    hold: 1h
  - weight: 100
    hold: 1h
"#;

fn write_config(dir: &RunDir, primary: SocketAddr, shadow: SocketAddr) {
    std::fs::write(dir.join("policy.yaml"), POLICY).expect("policy file");
    let config = format!(
        "steering: full_ads\nfilter: {{ kind: none }}\nnodes: [{NODE}]\nservices:\n  - policy: policy.yaml\n    listener: 127.0.0.1:0\n    endpoints:\n      checkout-v1: [\"{primary}\"]\n      checkout-v2: [\"{shadow}\"]\n"
    );
    std::fs::write(dir.join("serve.yaml"), config).expect("serve config");
}

/// Clients sending GETs through `address` until `stop`; counts the answers.
fn traffic(
    address: SocketAddr,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..3)
        .map(|_| {
            let (stop, sent) = (Arc::clone(stop), Arc::clone(sent));
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if http_get(address, "/").await.is_ok() {
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

/// The number of values drawn on the chart `id` of the checkout section.
const POINTS: &str = "return Object.fromEntries([...document.querySelectorAll('[data-service=checkout] canvas')].map(c => [c.dataset.chart, Number(c.dataset.points)]));";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_browser_shows_traffic_and_the_rollback_of_a_faulty_shadow() {
    let run = RunDir::new("dashboard-browser").expect("run dir");
    let primary = DemoUpstream::start(&run, "primary", &["--latency-ms", "2"]).expect("primary");
    let shadow = DemoUpstream::start(&run, "shadow", &["--latency-ms", "2"]).expect("shadow");
    write_config(&run, primary.addr(), shadow.addr());
    let xds_port = free_port();
    let engine = Engine::start(
        run.path(),
        &run.join("serve.yaml"),
        &run.join("state.redb"),
        xds_port,
    )
    .expect("doppel serve");
    let bootstrap =
        render_ads_bootstrap_with_metrics(xds_port, engine.metrics.port(), AdsMode::Sotw)
            .expect("bootstrap");
    let envoy = Envoy::start(&bootstrap, NODE).await.expect("envoy");
    engine.start_rollout();
    eventually(XDS_WAIT, "step 1 at 50% in Envoy", || async {
        let weights = envoy.route_weights().await.ok()?;
        weights
            .iter()
            .any(|(name, w)| name == "checkout-v2" && *w == 5_000)
            .then_some(())
    })
    .await;

    let browser = Browser::start(&run, 1440, 1500)
        .await
        .expect("headless chromium");
    browser
        .client
        .goto(&format!("http://{}/dashboard", engine.api))
        .await
        .expect("open the dashboard");
    browser
        .until(
            Duration::from_secs(10),
            "the live feed",
            "return document.getElementById('connection').dataset.state === 'live';",
        )
        .await
        .expect("the page connects to /dashboard/events");
    browser
        .until(Duration::from_secs(10), "the checkout section", "return document.querySelector('[data-service=checkout]')?.dataset.phase === 'shadowing';")
        .await
        .expect("the rollout is shown shadowing");

    let listener = envoy.listener_address("checkout").await.expect("listener");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let clients = traffic(listener, &stop, &sent);

    // Healthy: charts fill (both variants, several windows), the rule table shows values.
    let drawn = browser
        .until(
            Duration::from_secs(20),
            "charts with data",
            &format!("const p = (() => {{ {POINTS} }})(); return p.rate >= 8 && p.errors >= 8 && p.p50 >= 8 ? p : null;"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", engine.log_tail()));
    eprintln!("healthy phase drawn: {drawn}");
    let rule = browser
        .until(
            Duration::from_secs(15),
            "an evaluated rule",
            "const r = document.querySelector('tr[data-rule=shadow-errors]'); return r && r.dataset.state === 'clear' ? r.innerText : null;",
        )
        .await
        .expect("the rule evaluated and clear while healthy");
    assert!(
        rule.as_str().unwrap_or("").contains("compare.errors.worse"),
        "{rule}"
    );
    assert_eq!(
        browser
            .eval("return document.querySelector('[data-service=checkout]').dataset.phase;")
            .await
            .expect("phase"),
        "shadowing",
        "{}",
        engine.log_tail()
    );

    // The fault: one shadow answer in five is a 500.
    shadow
        .set_fault(&HttpClient::new(), r#"{"error_rate": 0.2}"#)
        .await
        .expect("fault the shadow");
    let rolled_back = browser
        .until(
            Duration::from_secs(30),
            "the rollback in the timeline",
            // The decision that rolled back; an alert rule that fires in the same or a later
            // look is also drawn in the rolled-back phase ("no effect: the rollout already ended").
            "const lis = [...document.querySelectorAll('[data-service=checkout] .timeline li[data-phase=rolled_back]')]; const li = lis.find(l => l.innerText.includes('→ rollback')); return li ? li.innerText : null;",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", engine.log_tail()));
    let text = rolled_back.as_str().unwrap_or("");
    assert!(text.contains("rule shadow-errors → rollback"), "{text}");
    assert!(
        text.contains("compare.errors.worse"),
        "the reason is shown: {text}"
    );

    let page: Value = browser
        .eval(&format!(
            "const s = document.querySelector('[data-service=checkout]'); return {{ phase: s.dataset.phase, \
             shadow: s.querySelector('.bar').dataset.shadow, rule: s.querySelector('tr[data-rule=shadow-errors]').dataset.state, \
             points: (() => {{ {POINTS} }})() }};"
        ))
        .await
        .expect("page state");
    assert_eq!(page["phase"], "rolled_back", "{page}");
    assert_eq!(
        page["shadow"], "0",
        "the weights bar shows the shadow at 0: {page}"
    );
    assert_eq!(page["rule"], "fired", "{page}");

    // A button pressed without a token is refused by the API, and says so.
    browser.eval("sessionStorage.clear(); document.querySelector('[data-service=checkout] button[data-command=pause]').click(); return true;").await.expect("click pause");
    let refusal = browser
        .until(Duration::from_secs(5), "the refusal", "const r = document.querySelector('[data-service=checkout] .result'); return r.classList.contains('error') ? r.innerText : null;")
        .await
        .expect("the refusal is shown");
    assert!(refusal.as_str().unwrap_or("").contains("401"), "{refusal}");

    // A few windows after the rollback, then the picture.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client task");
    }
    let shot = workspace_root().join("tests/artifacts/dashboard-rollback.png");
    browser.screenshot(&shot).await.expect("screenshot");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "a real screenshot ({size} bytes) at {}",
        shot.display()
    );
    eprintln!(
        "{} requests sent; screenshot at {}",
        sent.load(Ordering::SeqCst),
        shot.display()
    );
    browser.close().await.expect("close the browser");
}
