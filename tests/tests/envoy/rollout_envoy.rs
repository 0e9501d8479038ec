//! Rollout control end to end: the real `doppel serve` process, the real Envoy over ADS, and
//! two counting HTTP upstreams. Analysis outcomes are posted to the engine's API (the analysis
//! loop of the engine branch feeds the same input in-process after the merge).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use doppel_tests::host::support::within_binomial;
use doppel_tests::procs::{filter_split_wasm, filter_wasm};
use doppel_tests::rollout_support::{
    Engine, eventually, filter_only_bootstrap, free_port, policy_yaml,
};
use doppel_tests::xds_support::{
    AdsMode, Envoy, Upstream, XDS_WAIT, http_get, http_get_with, render_ads_bootstrap,
};
use serde_json::{Value, json};

const NODE: &str = "rollout-envoy";
const REQUESTS: u64 = 200;

/// Two counting upstreams, and a temp dir holding the test policy and a full-ADS serve config
/// with `filter` that serves them.
struct Rig {
    primary: Upstream,
    shadow: Upstream,
    dir: tempfile::TempDir,
}

async fn rig(filter: &str) -> Rig {
    let primary = Upstream::start("primary").await.expect("primary upstream");
    let shadow = Upstream::start("shadow").await.expect("shadow upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("policy.yaml"),
        policy_yaml(&[(10.0, "200ms"), (50.0, "200ms"), (90.0, "200ms")]),
    )
    .expect("policy file");
    let config = format!(
        "steering: full_ads\nfilter: {filter}\nnodes: [{NODE}]\nservices:\n  - policy: policy.yaml\n    listener: 127.0.0.1:0\n    endpoints:\n      checkout-v1: [\"{}\"]\n      checkout-v2: [\"{}\"]\n",
        primary.address, shadow.address
    );
    std::fs::write(dir.path().join("serve.yaml"), config).expect("serve config");
    Rig {
        primary,
        shadow,
        dir,
    }
}

/// The serve config's Wasm filter with both builds: the split-only one serves while the filter
/// sends no copies itself.
fn both_builds() -> String {
    format!(
        "{{ kind: wasm, path: \"{}\", split_path: \"{}\" }}",
        filter_wasm().display(),
        filter_split_wasm().display()
    )
}

/// The (checkout-v1, checkout-v2) weights in Envoy's config dump, once both are there.
async fn weights(envoy: &Envoy) -> Option<(u64, u64)> {
    let all = envoy.route_weights().await.ok()?;
    let of = |name: &str| all.iter().find(|(n, _)| n == name).map(|(_, w)| *w);
    Some((of("checkout-v1")?, of("checkout-v2")?))
}

async fn wait_weights(envoy: &Envoy, want: (u64, u64)) {
    eventually(XDS_WAIT, &format!("route weights {want:?}"), || async {
        (weights(envoy).await == Some(want)).then_some(())
    })
    .await;
}

/// Sends `REQUESTS` requests through Envoy's `checkout` listener; all must succeed. Returns
/// how many each upstream served.
async fn drive(envoy: &Envoy, primary: &Upstream, shadow: &Upstream) -> (u64, u64) {
    let address = envoy
        .listener_address("checkout")
        .await
        .expect("listener bound");
    let (p0, s0) = (primary.hits(), shadow.hits());
    for _ in 0..REQUESTS {
        let reply = http_get(address, "/").await.expect("request through envoy");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    (primary.hits() - p0, shadow.hits() - s0)
}

fn phase(status: &Value) -> (String, Option<u64>) {
    (
        status["rollout"]["phase"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        status["step"].as_u64(),
    )
}

/// `doppel serve` on the config [`rig`] wrote in `dir`, and an Envoy on its ADS,
/// once Envoy routes everything to the primary.
async fn full_ads(dir: &Path) -> (Engine, Envoy) {
    let xds_port = free_port();
    let engine = Engine::start(
        dir,
        &dir.join("serve.yaml"),
        &dir.join("state.redb"),
        xds_port,
    )
    .expect("doppel serve");
    let bootstrap = render_ads_bootstrap(xds_port, AdsMode::Sotw).expect("bootstrap");
    let envoy = Envoy::start(&bootstrap, NODE).await.expect("envoy");
    wait_weights(&envoy, (10_000, 0)).await;
    (engine, envoy)
}

async fn pass(engine: &Engine) -> Value {
    // Each step holds 200 ms: wait it out, then report a passing analysis.
    tokio::time::sleep(Duration::from_millis(250)).await;
    engine
        .event("checkout", &json!({ "at_ms": 0, "verdict": "pass" }))
        .await
        .expect("analysis event accepted")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_healthy_shadow_is_promoted_through_every_step() {
    let Rig {
        primary,
        shadow,
        dir,
    } = rig("{ kind: none }").await;
    let (engine, envoy) = full_ads(dir.path()).await;
    // Pending: everything on the primary.
    assert_eq!(drive(&envoy, &primary, &shadow).await, (REQUESTS, 0));
    engine.start_rollout();
    for (step, shadow_units) in [(1, 1_000u64), (2, 5_000), (3, 9_000)] {
        assert_eq!(
            phase(&engine.status("checkout")),
            ("shadowing".into(), Some(step))
        );
        wait_weights(&envoy, (10_000 - shadow_units, shadow_units)).await;
        let (to_primary, to_shadow) = drive(&envoy, &primary, &shadow).await;
        // Binomial(200, w): far outside these bounds is a wrong weight, not bad luck.
        let expected = REQUESTS * shadow_units / 10_000;
        assert!(
            to_shadow.abs_diff(expected) <= 40 && to_primary + to_shadow == REQUESTS,
            "step {step}: shadow got {to_shadow} of {REQUESTS}, expected about {expected}"
        );
        pass(&engine).await;
    }
    wait_weights(&envoy, (0, 10_000)).await;
    assert_eq!(drive(&envoy, &primary, &shadow).await, (0, REQUESTS));
    let out = engine.cli(&["wait", "checkout", "--timeout", "10s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let status = engine.status("checkout");
    assert_eq!(phase(&status).0, "promoted");
    let notes: Vec<&str> = status["decisions"]
        .as_array()
        .expect("decision log")
        .iter()
        .filter_map(|d| d["note"].as_str())
        .collect();
    assert_eq!(notes.len(), 4, "start and three passes: {notes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_engine_sigkill_mid_rollout_resumes_the_same_step() {
    let Rig {
        primary,
        shadow,
        dir,
    } = rig("{ kind: none }").await;
    let (config, store) = (dir.path().join("serve.yaml"), dir.path().join("state.redb"));
    let xds_port = free_port();
    let engine = Engine::start(dir.path(), &config, &store, xds_port).expect("doppel serve");
    let bootstrap = render_ads_bootstrap(xds_port, AdsMode::Sotw).expect("bootstrap");
    let envoy = Envoy::start(&bootstrap, NODE).await.expect("envoy");
    wait_weights(&envoy, (10_000, 0)).await;

    engine.start_rollout();
    pass(&engine).await;
    wait_weights(&envoy, (5_000, 5_000)).await;
    let before = engine.status("checkout");
    assert_eq!(phase(&before), ("shadowing".into(), Some(2)));
    let version = before["nodes"][0]["version"]
        .as_u64()
        .expect("node version");
    let seq = before["decisions"].as_array().map_or(0, Vec::len);

    engine.kill();
    // Envoy keeps serving the last config with no engine at all.
    let (to_primary, to_shadow) = drive(&envoy, &primary, &shadow).await;
    assert!(to_primary > 0 && to_shadow > 0, "{to_primary}/{to_shadow}");
    assert_eq!(weights(&envoy).await, Some((5_000, 5_000)));

    let engine = Engine::start(dir.path(), &config, &store, xds_port).expect("restarted");
    let after = eventually(
        XDS_WAIT,
        "envoy reconnected to the restarted engine",
        || async {
            let status = engine.status("checkout");
            (status["nodes"][0]["streams"].as_u64() >= Some(1)).then_some(status)
        },
    )
    .await;
    assert_eq!(phase(&after), ("shadowing".into(), Some(2)), "same step");
    assert_eq!(
        after["nodes"][0]["version"].as_u64(),
        Some(version),
        "same snapshot version"
    );
    assert_eq!(
        after["rollout"]["phase"], before["rollout"]["phase"],
        "hold clock kept"
    );
    assert_eq!(after["decisions"].as_array().map_or(0, Vec::len), seq);
    assert_eq!(
        weights(&envoy).await,
        Some((5_000, 5_000)),
        "no weight reset"
    );

    // The next pass goes to step 3: step 2 is not repeated, none is skipped.
    let answer = pass(&engine).await;
    assert_eq!(answer["status"]["step"], 3);
    wait_weights(&envoy, (1_000, 9_000)).await;
    assert_eq!(
        engine.status("checkout")["nodes"][0]["version"].as_u64(),
        Some(version + 1)
    );
}

/// The ECDS config of the doppel filter Envoy's `checkout` listener runs ([`listener_filter`]:
/// `doppel.checkout.pool` on its pool, else `doppel.checkout`, also the name under filter-only
/// steering, whose listener is static); `Null` until Envoy has it.
async fn served_ecds(envoy: &Envoy) -> Value {
    let name = listener_filter(envoy)
        .await
        .map_or_else(|| "doppel.checkout".to_owned(), |(name, _)| name);
    let Ok(dump) = envoy.config_dump("ecds_filters").await else {
        return Value::Null;
    };
    dump["configs"]
        .as_array()
        .and_then(|configs| {
            configs
                .iter()
                .map(|c| &c["ecds_filter"])
                .find(|f| f["name"] == name.as_str())
        })
        .map_or(Value::Null, |f| f["typed_config"]["config"].clone())
}

/// The filter config (JSON) Envoy serves the doppel filter ([`served_ecds`]).
async fn served_filter_config(envoy: &Envoy) -> Value {
    served_ecds(envoy).await["configuration"]["value"]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

/// The `.wasm` file of the doppel filter config Envoy serves ([`served_ecds`]).
async fn served_module(envoy: &Envoy) -> String {
    served_ecds(envoy).await["vm_config"]["code"]["local"]["filename"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_filter(envoy: &Envoy, mode: &str, percent: f64) {
    eventually(
        XDS_WAIT,
        &format!("filter config {mode} {percent}%"),
        || async {
            let config = served_filter_config(envoy).await;
            (config["mode"] == mode && config["percent"].as_f64() == Some(percent)).then_some(())
        },
    )
    .await;
}

/// Sends `n` requests to `listener`; all must succeed. Returns how many each upstream served.
async fn drive_listener(
    listener: SocketAddr,
    n: u64,
    primary: &Upstream,
    shadow: &Upstream,
) -> (u64, u64) {
    let (p0, s0) = (primary.hits(), shadow.hits());
    for _ in 0..n {
        let reply = http_get(listener, "/")
            .await
            .expect("request through envoy");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    (primary.hits() - p0, shadow.hits() - s0)
}

/// Filter-only steering with the real Wasm filter: Envoy's routes and clusters are static (the
/// mesh's), doppel serves only the filter's config over ECDS, and a rollback takes the shadow's
/// share to 0 through ECDS alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_filter_only_rollback_over_ecds_and_a_nack_is_reported() {
    let primary = Upstream::start("primary").await.expect("primary upstream");
    let shadow = Upstream::start("shadow").await.expect("shadow upstream");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("policy.yaml"),
        policy_yaml(&[(10.0, "1h"), (50.0, "1h")]),
    )
    .expect("policy");
    // Off and split: the engine pushes the split-only build.
    let serve = |wasm: &Path, split: &Path| {
        format!(
            "steering: filter_only\nfilter: {{ kind: wasm, path: \"{}\", split_path: \"{}\" }}\nnodes: [{NODE}]\nservices:\n  - policy: policy.yaml\n",
            wasm.display(),
            split.display()
        )
    };
    let config = dir.path().join("serve.yaml");
    std::fs::write(&config, serve(&filter_wasm(), &filter_split_wasm())).expect("serve config");
    let store = dir.path().join("state.redb");
    let xds_port = free_port();
    let engine = Engine::start(dir.path(), &config, &store, xds_port).expect("doppel serve");
    let envoy = Envoy::start(
        &filter_only_bootstrap(xds_port, primary.address, shadow.address),
        NODE,
    )
    .await
    .expect("envoy");
    let listener = envoy
        .listener_address("checkout")
        .await
        .expect("static listener");
    wait_filter(&envoy, "off", 0.0).await;
    assert_eq!(
        drive_listener(listener, REQUESTS, &primary, &shadow).await,
        (REQUESTS, 0),
        "pending: the filter is off"
    );

    engine.start_rollout();
    wait_filter(&envoy, "split", 10.0).await;
    assert_eq!(
        served_module(&envoy).await,
        filter_split_wasm().display().to_string(),
        "a splitting filter is the split-only build"
    );
    // The filter now routes about 10% to the shadow through the mesh's own header route.
    let (to_primary, to_shadow) = drive_listener(listener, 4 * REQUESTS, &primary, &shadow).await;
    assert!(
        (40..=130).contains(&to_shadow) && to_primary + to_shadow == 4 * REQUESTS,
        "split at 10%: the shadow served {to_shadow} of {}",
        4 * REQUESTS
    );

    let out = engine.cli(&["rollback", "checkout"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_filter(&envoy, "off", 0.0).await;
    assert_eq!(
        drive_listener(listener, 4 * REQUESTS, &primary, &shadow).await,
        (4 * REQUESTS, 0),
        "rolled back: shadow traffic stopped"
    );
    let out = engine.cli(&["wait", "checkout", "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(2), "wait exits 2 for rolled back");
    // Only ECDS moved: no listener, route or cluster came from doppel.
    let dump = envoy.admin("/config_dump").await.expect("config dump");
    let dump: Value = serde_json::from_str(&dump).expect("config dump is JSON");
    let dynamic = |kind: &str| {
        dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["@type"].as_str().is_some_and(|t| t.contains(kind)))
            .map(|c| c.to_string())
            .collect::<String>()
    };
    for kind in [
        "ListenersConfigDump",
        "ClustersConfigDump",
        "RoutesConfigDump",
    ] {
        assert!(
            !dynamic(kind).contains("\"dynamic_"),
            "no {kind} resource came from doppel"
        );
    }
    let status = engine.status("checkout");
    assert_eq!(status["traffic"]["filter_percent"], 0.0);
    assert_eq!(status["mirroring"], false);

    // Restart with a filter Envoy cannot load (the .wasm path does not exist): Envoy rejects
    // the ECDS update, keeps the last good config, and status says so.
    engine.kill();
    let missing = Path::new("/nonexistent/doppel.wasm");
    std::fs::write(&config, serve(missing, missing)).expect("serve config");
    let engine = Engine::start(dir.path(), &config, &store, xds_port).expect("restarted");
    let rejected = eventually(XDS_WAIT, "the NACK in rollout status", || async {
        let status = engine.status("checkout");
        let rejected = status["nodes"][0]["rejected"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (!rejected.is_empty()).then_some(rejected)
    })
    .await;
    assert_eq!(rejected[0]["kind"], "ecds");
    let error = rejected[0]["error"].as_str().unwrap_or("");
    assert!(!error.is_empty(), "Envoy's reason is reported");
    let out = engine.cli(&["status", "checkout"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("REJECTED ecds"), "{text}");
    let served = served_filter_config(&envoy).await;
    assert_eq!(
        (served["mode"].as_str(), served["percent"].as_f64()),
        (Some("off"), Some(0.0)),
        "Envoy keeps the last good filter config"
    );
    assert_eq!(
        drive_listener(listener, REQUESTS, &primary, &shadow).await,
        (REQUESTS, 0),
        "Envoy still serves, all on the primary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_rule_rollback_decision_takes_the_shadow_to_zero_in_one_push() {
    let Rig {
        primary,
        shadow,
        dir,
    } = rig(&format!(
        "{{ kind: wasm, path: \"{}\" }}",
        filter_wasm().display()
    ))
    .await;
    let xds_port = free_port();
    let engine = Engine::start(
        dir.path(),
        &dir.path().join("serve.yaml"),
        &dir.path().join("state.redb"),
        xds_port,
    )
    .expect("doppel serve");
    let bootstrap = render_ads_bootstrap(xds_port, AdsMode::Delta).expect("bootstrap");
    let envoy = Envoy::start(&bootstrap, NODE).await.expect("envoy");
    engine.start_rollout();
    wait_weights(&envoy, (9_000, 1_000)).await;
    let before = engine.status("checkout")["nodes"][0]["version"].as_u64();

    // What the analysis loop sends when a rollback rule fires (its Decision as an event).
    let answer = engine
        .event(
            "checkout",
            &json!({ "at_ms": 0, "verdict": "fired", "rule": "errors", "action": "rollback" }),
        )
        .await
        .expect("decision accepted");
    assert_eq!(answer["status"]["rollout"]["phase"]["phase"], "rolled_back");
    assert_eq!(answer["status"]["rollout"]["phase"]["reason"], "errors");
    assert_eq!(
        answer["status"]["nodes"][0]["version"].as_u64(),
        before.map(|v| v + 1),
        "weight and filter change in one snapshot"
    );
    wait_weights(&envoy, (10_000, 0)).await;
    wait_filter(&envoy, "off", 0.0).await;
    assert_eq!(drive(&envoy, &primary, &shadow).await, (REQUESTS, 0));
    assert_eq!(
        engine
            .cli(&["wait", "checkout", "--timeout", "5s"])
            .status
            .code(),
        Some(2)
    );
}

/// Full ADS with Envoy's router sending the mirror copies (`traffic.mirror.sender: envoy`): the
/// engine pushes the split-only build and a route that copies exactly the requests the filter
/// marked, so the shadow gets the policy's share of copies and the clients only the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_full_ads_mirror_sent_by_envoy_copies_the_share_the_filter_marks() {
    let Rig {
        primary,
        shadow,
        dir,
    } = rig(&both_builds()).await;
    let policy = std::fs::read_to_string(dir.path().join("policy.yaml")).expect("policy");
    let mirrored = policy.replace(
        "  mode: split\n",
        "  mode: mirror\n  mirror:\n    sender: envoy\n",
    );
    assert_ne!(mirrored, policy);
    std::fs::write(dir.path().join("policy.yaml"), mirrored).expect("policy");
    let (engine, envoy) = full_ads(dir.path()).await;
    engine.start_rollout();
    // Step 1: 10% of requests copied; the route keeps serving everything from the primary.
    wait_filter(&envoy, "mirror", 10.0).await;
    assert_eq!(
        served_module(&envoy).await,
        filter_split_wasm().display().to_string(),
        "the filter sends no copies itself: the split-only build serves"
    );
    let requests = 400;
    let listener = envoy
        .listener_address("checkout")
        .await
        .expect("listener bound");
    let (to_primary, _) = drive_listener(listener, requests, &primary, &shadow).await;
    assert_eq!(
        to_primary, requests,
        "every client request is the primary's"
    );
    // Copies are sent beside the requests; wait until they have all landed.
    let mut copies = shadow.hits();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = shadow.hits();
        if now == copies {
            break;
        }
        copies = now;
    }
    // Binomial(400, 0.1): 40 expected; far outside is a wrong share, not bad luck.
    assert!(
        (15..=70).contains(&copies),
        "the shadow got {copies} copies of {requests} requests at 10%"
    );
    let sent = envoy
        .stat("cluster.checkout-v2.upstream_rq_total")
        .await
        .expect("shadow cluster stat");
    assert_eq!(sent, copies, "every copy went through the shadow's cluster");
}

/// A client's copies of the four control headers, which Envoy must remove.
const SPOOFED: [(&str, &str); 4] = [
    ("x-doppel-variant", "shadow"),
    ("x-doppel-id", "0123456789abcdef0123456789abcdef"),
    ("x-doppel-mirror", "1"),
    ("x-doppel-mirror-to", "checkout-v2"),
];

/// Full ADS with the Wasm filter: doppel's connection manager removes client-sent control headers
/// before the filter runs, and the filter, told so (`strip_control: envoy`), leaves them to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_full_ads_envoy_strips_spoofed_control_headers_before_the_filter() {
    let Rig {
        primary,
        shadow,
        dir,
    } = rig(&both_builds()).await;
    let (_engine, envoy) = full_ads(dir.path()).await;
    eventually(XDS_WAIT, "the filter's config", || async {
        let config = served_filter_config(&envoy).await;
        (config["strip_control"] == "envoy").then_some(())
    })
    .await;
    let listener = envoy
        .listener_address("checkout")
        .await
        .expect("listener bound");
    let requests = 200;
    for _ in 0..requests {
        let reply = http_get_with(listener, "/", &SPOOFED)
            .await
            .expect("request through envoy");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    assert_eq!(
        shadow.hits(),
        0,
        "a spoofed variant header reached the shadow"
    );
    assert_eq!(primary.hits(), requests);
    assert_eq!(
        primary.marked(),
        0,
        "spoofed control headers reached the primary"
    );
}

/// Full ADS, a 1% split at random: Envoy's route runs the filter only on its pool (5.95% of
/// requests: the 1% it chooses and the primary's 5% sample of the rest) and the filter scales
/// its shares to it, so it still chooses 1% of all requests and measures 5% of the primary's.
/// Were the filter run on every request with that config, it would choose and measure about
/// seventeen times as many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_full_ads_filter_runs_on_its_pool_only() {
    let Rig {
        primary,
        shadow,
        dir,
    } = rig(&both_builds()).await;
    let (engine, envoy) = full_ads(dir.path()).await;
    engine.start_rollout();
    // Step 1: the route sends 10% to the shadow, the filter chooses the policy's 1% on top.
    wait_weights(&envoy, (9_000, 1_000)).await;
    wait_filter(&envoy, "split", 1.0).await;
    let config = served_filter_config(&envoy).await;
    assert_eq!(config["pool_percent"], 5.95, "{config}");
    let listener = envoy
        .listener_address("checkout")
        .await
        .expect("listener bound");
    // Every request spoofs the control headers: the pool's draw is Envoy's, not the client's.
    let requests = 2_000;
    let (p0, s0) = (primary.hits(), shadow.hits());
    for _ in 0..requests {
        let reply = http_get_with(listener, "/", &SPOOFED)
            .await
            .expect("request through envoy");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let (to_primary, to_shadow) = (primary.hits() - p0, shadow.hits() - s0);
    assert_eq!(to_primary + to_shadow, requests);
    assert_eq!(
        primary.marked(),
        0,
        "a spoofed control header reached the primary"
    );
    // The filter publishes its counts on its tick.
    let stat = |variant: &str| {
        let name = format!("wasmcustom.doppel.checkout.{variant}.rq_total");
        let envoy = &envoy;
        async move { envoy.stat(&name).await.expect("filter stat") }
    };
    // Settled: the same counts a tick apart.
    let mut counts = (0, 0);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let now = (stat("shadow").await, stat("primary").await);
        if now == counts && now.0 + now.1 > 0 {
            break;
        }
        counts = now;
    }
    let (chosen, measured) = counts;
    let (ok, expected, allowed) = within_binomial(requests, 0.01, chosen, 4.0);
    assert!(
        ok,
        "the filter chose {chosen} of {requests}, expected {expected} ± {allowed:.0}"
    );
    let unchosen = requests - chosen;
    let (ok, expected, allowed) = within_binomial(unchosen, 0.05, measured, 4.0);
    assert!(
        ok,
        "{measured} of {unchosen} primary requests measured, expected {expected} ± {allowed:.0}"
    );
    // Only the filter's own marks reach the shadow.
    assert_eq!(shadow.marked(), chosen);
    // The shadow serves the filter's choice and the route's 10% of the rest.
    let (ok, expected, allowed) = within_binomial(requests, 0.01 + 0.99 * 0.10, to_shadow, 4.0);
    assert!(
        ok,
        "the shadow got {to_shadow} of {requests}, expected {expected} ± {allowed:.0}"
    );
}

/// The name of the HTTP filter in Envoy's active `checkout` listener and whether it is
/// disabled by default (skipped unless a route enables it).
async fn listener_filter(envoy: &Envoy) -> Option<(String, bool)> {
    let dump = envoy.config_dump("dynamic_listeners").await.ok()?;
    let listener = dump["configs"]
        .as_array()?
        .iter()
        .map(|c| &c["active_state"]["listener"])
        .find(|l| l["name"] == "checkout")?;
    let filter = &listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0];
    Some((
        filter["name"].as_str()?.to_owned(),
        filter["disabled"].as_bool().unwrap_or(false),
    ))
}

/// Sends two requests as each of `users` users (`x-user-id: u<i>`); returns how many users got
/// the shadow twice and how many got one of each.
async fn twice_per_user(listener: SocketAddr, users: u64) -> (u64, u64) {
    let (mut shadow_twice, mut split) = (0, 0);
    for i in 0..users {
        let user = format!("u{i}");
        let mut shadowed = 0;
        for _ in 0..2 {
            let reply = http_get_with(listener, "/", &[("x-user-id", user.as_str())])
                .await
                .expect("request through envoy");
            assert_eq!(reply.status, 200, "{reply:?}");
            shadowed += u64::from(reply.body == "shadow");
        }
        match shadowed {
            2 => shadow_twice += 1,
            1 => split += 1,
            _ => {}
        }
    }
    (shadow_twice, split)
}

/// Waits until Envoy's `checkout` listener runs the HTTP filter named `filter.0`, disabled by
/// default or not (`filter.1`), then sends two requests as each of 1,000 users
/// ([`twice_per_user`]).
async fn after_switch(envoy: &Envoy, filter: (&str, bool)) -> (u64, u64) {
    let want = Some((filter.0.to_owned(), filter.1));
    eventually(
        XDS_WAIT,
        &format!("the listener's filter {filter:?}"),
        || {
            let want = want.clone();
            async move { (listener_filter(envoy).await == want).then_some(()) }
        },
    )
    .await;
    let listener = envoy
        .listener_address("checkout")
        .await
        .expect("listener bound");
    twice_per_user(listener, 1_000).await
}

/// A policy reload that adds a sticky key takes the filter off its pool (the listener's filter
/// becomes `doppel.checkout`, run on every request, with the sticky config), and removing the
/// key puts it back on (`doppel.checkout.pool`, skipped outside the pool): Envoy switches
/// listeners between the two ECDS resources and serves requests throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_full_ads_policy_reload_moves_the_filter_off_its_pool_and_back() {
    let Rig {
        primary: _primary,
        shadow: _shadow,
        dir,
    } = rig(&both_builds()).await;
    // The route's own share is as small as a step can be: the shadow is the filter's choice.
    let random = policy_yaml(&[(0.01, "1h")]);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, &random).expect("policy file");
    let (engine, envoy) = full_ads(dir.path()).await;
    engine.start_rollout();
    wait_filter(&envoy, "split", 1.0).await;
    const POOLED: (&str, bool) = ("doppel.checkout.pool", true);
    // At random, a user's two requests land apart: hardly anyone gets the shadow twice.
    let (twice, _) = after_switch(&envoy, POOLED).await;
    assert!(
        twice <= 2,
        "{twice} of 1000 users got the shadow twice at random"
    );

    let sticky = random.replace(
        "  percent: 1\n",
        "  percent: 1\n  sticky:\n    header: x-user-id\n",
    );
    assert_ne!(sticky, random);
    std::fs::write(&policy, &sticky).expect("policy file");
    // Sticky: a chosen user gets the shadow both times (about 10 of 1000), nobody one of each
    // beyond the route's 0.01%.
    let (twice, split) = after_switch(&envoy, ("doppel.checkout", false)).await;
    assert!(
        (3..=25).contains(&twice) && split <= 2,
        "sticky: {twice} users got the shadow twice, {split} one of each"
    );

    std::fs::write(&policy, &random).expect("policy file");
    let (twice, split) = after_switch(&envoy, POOLED).await;
    assert!(
        twice <= 2,
        "back on the pool: {twice} of 1000 users got the shadow twice"
    );
    let (ok, expected, allowed) = within_binomial(2_000, 0.01, split + 2 * twice, 4.0);
    assert!(
        ok,
        "back on the pool: {split} users split, {twice} twice; expected about {expected} ± {allowed:.0} shadowed requests"
    );
}
