//! `doppel replay` run as a binary on the example traces of `policies/traces/`
//! (made by `policies/traces/generate.py`: the regressions start at minute 10).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// 2026-01-01T00:00:00Z, the first window of every example trace.
const TRACE_START_MS: u64 = 1_767_225_600_000;
/// The regressions begin with window 60 (minute 10).
const REGRESSION_MS: u64 = TRACE_START_MS + 600_000;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn replay(policy: &Path, trace: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_doppel"));
    cmd.arg("replay")
        .arg("--policy")
        .arg(policy)
        .arg("--trace")
        .arg(trace);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run doppel")
}

fn report(trace: &str) -> serde_json::Value {
    let out = replay(
        &repo("policies/checkout-split.yaml"),
        &repo(&format!("policies/traces/{trace}")),
        true,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("replay --json prints JSON")
}

fn decisions<'a>(r: &'a serde_json::Value, action: &str) -> Vec<&'a serde_json::Value> {
    r["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter(|d| d["action"] == action)
        .collect()
}

#[test]
fn replay_of_a_healthy_trace_never_rolls_back_and_steps_up() {
    let r = report("healthy.jsonl");
    assert_eq!(r["windows"], 180);
    assert!(decisions(&r, "rollback").is_empty(), "{r:#}");
    assert!(decisions(&r, "pause").is_empty(), "{r:#}");
    assert!(r["end"].is_null());
    // The shift rule needs five minutes at each step, and each step's hold time.
    let shifts: Vec<u64> = decisions(&r, "shift")
        .iter()
        .map(|d| d["at_ms"].as_u64().expect("at_ms") - TRACE_START_MS)
        .collect();
    assert_eq!(shifts, vec![300_000, 600_000, 1_200_000], "{r:#}");
}

#[test]
fn replay_of_an_error_regression_rolls_back_soon_after_it_starts() {
    let r = report("errors-regression.jsonl");
    let rollbacks = decisions(&r, "rollback");
    assert_eq!(rollbacks.len(), 1, "{r:#}");
    let d = rollbacks[0];
    let at = d["at_ms"].as_u64().expect("at_ms");
    assert!(
        at > REGRESSION_MS && at <= REGRESSION_MS + 300_000,
        "rollback at +{} s",
        (at - TRACE_START_MS) / 1000
    );
    assert_eq!(d["rule"], "shadow-errors-worse");
    assert_eq!(d["values"]["compare.errors.worse"], true);
    assert!(
        d["values"]["compare.errors.difference"]
            .as_f64()
            .expect("difference")
            > 0.0
    );
    let why = d["explanation"].as_str().expect("explanation");
    assert!(why.contains("mSPRT always-valid p="), "{why}");
    assert!(why.contains("rolled back"), "{why}");
    assert_eq!(r["end"], "rolled_back");
    // After the rollback nothing more is decided.
    let last = r["decisions"]
        .as_array()
        .and_then(|d| d.last())
        .expect("a decision");
    assert_eq!(last["action"], "rollback");
}

#[test]
fn replay_of_a_latency_regression_pauses_and_does_not_roll_back() {
    let r = report("latency-regression.jsonl");
    assert!(decisions(&r, "rollback").is_empty(), "{r:#}");
    let pauses = decisions(&r, "pause");
    assert_eq!(pauses.len(), 1, "{r:#}");
    let at = pauses[0]["at_ms"].as_u64().expect("at_ms");
    assert!(at > REGRESSION_MS && at <= REGRESSION_MS + 300_000);
    // Paused: no shift after the pause.
    assert!(
        decisions(&r, "shift")
            .iter()
            .all(|d| d["at_ms"].as_u64() < Some(at))
    );
}

#[test]
fn replay_is_deterministic_and_prints_a_timeline() {
    let policy = repo("policies/checkout-split.yaml");
    let trace = repo("policies/traces/errors-regression.jsonl");
    let a = replay(&policy, &trace, false);
    let b = replay(&policy, &trace, false);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8_lossy(&a.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("ROLLBACK"))
        .expect("a rollback line");
    assert!(line.starts_with("2026-01-01T00:1"), "{line}");
    assert!(line.contains("shadow-errors-worse [critical]"), "{line}");
    assert!(
        text.contains("values: compare.errors.difference="),
        "{text}"
    );
    assert!(text.contains("\noutcome: rolled back"), "{text}");
}

#[test]
fn replay_reports_every_bad_trace_line_with_its_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("bad.jsonl");
    let good = std::fs::read_to_string(repo("policies/traces/healthy.jsonl")).expect("trace");
    let mut lines: Vec<String> = good.lines().take(5).map(String::from).collect();
    lines[1] = "{\"service\": \"checkout\"".to_string();
    lines[3] = lines[3].replace("\"requests\":", "\"reqs\":");
    std::fs::write(&trace, lines.join("\n")).expect("write");
    let out = replay(&repo("policies/checkout-split.yaml"), &trace, false);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing is replayed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("{}:", trace.display());
    let bad: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(bad.len(), 2, "{stderr}");
    assert!(bad[0].starts_with(&format!("{prefix}2: ")), "{stderr}");
    assert!(bad[1].starts_with(&format!("{prefix}4: ")), "{stderr}");
    assert!(bad[1].contains("reqs"), "{stderr}");
}

#[test]
fn replay_refuses_windows_out_of_order_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("swapped.jsonl");
    let good = std::fs::read_to_string(repo("policies/traces/healthy.jsonl")).expect("trace");
    let mut lines: Vec<&str> = good.lines().take(6).collect();
    lines.swap(2, 4);
    std::fs::write(&trace, lines.join("\n")).expect("write");
    let out = replay(&repo("policies/checkout-split.yaml"), &trace, false);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:4: ", trace.display())),
        "{stderr}"
    );
    assert!(stderr.contains("out of order"), "{stderr}");
}

#[test]
fn replay_of_a_mirror_trace_pauses_on_body_mismatches() {
    let out = replay(
        &repo("policies/search-mirror.yaml"),
        &repo("policies/traces/search-mirror.jsonl"),
        true,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let pauses = decisions(&r, "pause");
    assert_eq!(pauses.len(), 1, "{r:#}");
    let d = pauses[0];
    // Mismatches start at minute 5; the 10-minute sliding window needs them above 1%.
    let at = d["at_ms"].as_u64().expect("at_ms");
    assert!(at > TRACE_START_MS + 300_000, "{r:#}");
    assert!(d["values"]["mirror.mismatch_rate"].as_f64() > Some(0.01));
    assert!(
        decisions(&r, "alert").is_empty(),
        "no status mismatch in this trace"
    );
}

#[test]
fn replay_of_a_trace_without_the_policy_service_fails() {
    let out = replay(
        &repo("policies/search-mirror.yaml"),
        &repo("policies/traces/healthy.jsonl"),
        false,
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("skipped 180 windows of service checkout"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no window of service search"));
}
