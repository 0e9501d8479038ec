use std::collections::BTreeMap;

use super::*;
use crate::analysis::{Evaluation, Outcome, RuleState};
use crate::policy::Action;
use crate::rollout::PlanStep;

fn rollout(service: &str, phase: Phase) -> Rollout {
    Rollout {
        service: service.into(),
        plan: vec![
            PlanStep {
                weight: 10.0,
                hold_ms: 1,
            },
            PlanStep {
                weight: 50.0,
                hold_ms: 1,
            },
        ],
        version: Some("v2".into()),
        phase,
        generation: 1,
    }
}

fn evaluated(rules: usize) -> Evaluation {
    let rule = RuleState {
        name: "r".into(),
        action: Action::Rollback,
        holds: false,
        streak: 0,
        for_intervals: 1,
        fired: false,
        values: BTreeMap::new(),
        p_value: None,
    };
    Evaluation {
        at_ms: 1,
        step: 1,
        outcome: Outcome::Evaluated {
            holding: Vec::new(),
        },
        decisions: Vec::new(),
        rules: vec![rule; rules],
        synthetic: None,
        resources: None,
    }
}

/// The samples of a page: (name with labels, value); checks every sample follows its own
/// family's HELP and TYPE lines.
fn samples(page: &str) -> BTreeMap<String, f64> {
    let mut family = String::new();
    let mut out = BTreeMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            family = rest.split(' ').next().unwrap_or("").to_owned();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            assert!(rest.starts_with(&format!("{family} ")), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let name = series.split('{').next().unwrap_or("");
        assert_eq!(name, family, "sample outside its family: {line}");
        let previous = out.insert(series.to_owned(), value.parse::<f64>().expect("a number"));
        assert!(previous.is_none(), "duplicate series {series}");
    }
    out
}

#[test]
fn metrics_page_counts_looks_rules_decisions_and_shows_rollouts() {
    let telemetry = Telemetry::new();
    telemetry.look(&evaluated(3));
    telemetry.look(&evaluated(2));
    telemetry.look(&Evaluation {
        outcome: Outcome::Inconclusive {
            reason: "few".into(),
            holding: Vec::new(),
        },
        ..evaluated(0)
    });
    telemetry.decision("rule", "rollback");
    telemetry.decision("operator", "pause");
    telemetry.decision("operator", "pause");
    telemetry.analysis_error("out_of_order");
    let ingest = Counts::default();
    ingest.message();
    ingest.message();
    ingest.record(7, ["unknown_metric", "unknown_metric", "wrong_type"]);
    let xds = XdsCounters::default();
    xds.push(ResourceType::Cluster);
    xds.push(ResourceType::Cluster);
    xds.ack(ResourceType::Cluster);
    xds.nack(ResourceType::Cluster);
    let page = render(&Scrape {
        telemetry: &telemetry,
        ingest: &ingest,
        xds: &xds,
        nodes: vec![("envoy-1".into(), 2)],
        rollouts: vec![
            rollout(
                "checkout",
                Phase::Paused {
                    step: 1,
                    at_ms: 5,
                    reason: "operator".into(),
                },
            ),
            rollout(
                "cart",
                Phase::RolledBack {
                    at_ms: 5,
                    reason: "errors".into(),
                },
            ),
        ],
    });
    let s = samples(&page);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in\n{page}"));
    assert_eq!(get("doppel_ingest_messages_total"), 2.0);
    assert_eq!(get("doppel_ingest_metrics_accepted_total"), 7.0);
    assert_eq!(
        get("doppel_ingest_metrics_refused_total{code=\"unknown_metric\"}"),
        2.0
    );
    assert_eq!(
        get("doppel_ingest_metrics_refused_total{code=\"too_large\"}"),
        0.0,
        "every code is listed"
    );
    assert_eq!(
        get("doppel_analysis_looks_total{outcome=\"evaluated\"}"),
        2.0
    );
    assert_eq!(
        get("doppel_analysis_looks_total{outcome=\"inconclusive\"}"),
        1.0
    );
    assert_eq!(get("doppel_analysis_rules_evaluated_total"), 5.0);
    assert_eq!(
        get("doppel_analysis_errors_total{code=\"out_of_order\"}"),
        1.0
    );
    assert_eq!(
        get("doppel_decisions_total{source=\"operator\",action=\"pause\"}"),
        2.0
    );
    assert_eq!(
        get("doppel_decisions_total{source=\"rule\",action=\"rollback\"}"),
        1.0
    );
    assert_eq!(get("doppel_xds_pushes_total{type=\"cds\"}"), 2.0);
    assert_eq!(get("doppel_xds_acks_total{type=\"cds\"}"), 1.0);
    assert_eq!(get("doppel_xds_nacks_total{type=\"cds\"}"), 1.0);
    assert_eq!(get("doppel_xds_nacks_total{type=\"ecds\"}"), 0.0);
    assert_eq!(get("doppel_xds_streams{node=\"envoy-1\"}"), 2.0);
    assert_eq!(
        get("doppel_rollout_state{service=\"checkout\",state=\"paused\"}"),
        1.0
    );
    assert_eq!(
        get("doppel_rollout_state{service=\"checkout\",state=\"shadowing\"}"),
        0.0
    );
    assert_eq!(get("doppel_rollout_step{service=\"checkout\"}"), 2.0);
    assert_eq!(
        get("doppel_rollout_shadow_weight_percent{service=\"checkout\"}"),
        50.0,
        "paused at step 2 keeps its weight"
    );
    assert_eq!(get("doppel_rollout_step{service=\"cart\"}"), 0.0);
    assert_eq!(
        get("doppel_rollout_shadow_weight_percent{service=\"cart\"}"),
        0.0
    );
    assert_eq!(get("doppel_dashboard_clients"), 0.0);
}

#[test]
fn dashboard_clients_are_counted_while_their_stream_lives() {
    let telemetry = std::sync::Arc::new(Telemetry::new());
    let a = telemetry.dashboard_client();
    let b = telemetry.dashboard_client();
    assert_eq!(telemetry.dashboard_clients.load(Ordering::Relaxed), 2);
    drop(a);
    drop(b);
    assert_eq!(telemetry.dashboard_clients.load(Ordering::Relaxed), 0);
}

#[test]
fn shadow_weight_follows_the_phase() {
    let shadowing = rollout(
        "a",
        Phase::Shadowing {
            step: 0,
            since_ms: 1,
        },
    );
    assert_eq!(shadow_weight(&shadowing), 10.0);
    assert_eq!(
        shadow_weight(&rollout("a", Phase::Promoted { at_ms: 1 })),
        100.0
    );
    assert_eq!(shadow_weight(&rollout("a", Phase::Pending)), 0.0);
}
