//! The dashboard's snapshot: every service's policy (rules, steps), rollout status (phase,
//! step, weights, nodes, decision log) and history, as one JSON document.

use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

use super::Dashboard;
use super::history::ServiceHistory;
use crate::policy::{Action, Mode, Percent, Policy, Severity, Step};
use crate::rollout::{Controller, RolloutError, RolloutStatus, now_ms};
use crate::telemetry::shadow_weight;

/// Locks the controller; a panic while it was held leaves it consistent (it commits before it
/// changes memory).
pub fn lock(controller: &Mutex<Controller>) -> MutexGuard<'_, Controller> {
    controller
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A rule as the page lists it.
#[derive(Clone, Debug, Serialize)]
pub struct RuleSummary {
    /// Its name.
    pub name: String,
    /// Its CEL condition.
    pub when: String,
    /// Its action.
    pub action: Action,
    /// Intervals it must hold to fire.
    pub for_intervals: u32,
    /// How loud it is.
    pub severity: Severity,
}

/// What the page shows of a policy.
#[derive(Clone, Debug, Serialize)]
pub struct PolicySummary {
    /// Split, mirror or off.
    pub mode: Mode,
    /// The filter's share at the start.
    pub percent: Percent,
    /// The analysis interval in milliseconds.
    pub interval_ms: u64,
    /// Requests each variant needs before rules are evaluated.
    pub min_sample: u64,
    /// The tests' false-alarm rate.
    pub alpha: f64,
    /// The rules, in policy order.
    pub rules: Vec<RuleSummary>,
    /// The promotion steps.
    pub steps: Vec<Step>,
}

impl PolicySummary {
    fn of(policy: &Policy) -> PolicySummary {
        PolicySummary {
            mode: policy.traffic.mode,
            percent: policy.traffic.percent,
            interval_ms: policy.analysis.interval_ms,
            min_sample: policy.analysis.min_sample,
            alpha: policy.analysis.alpha,
            rules: policy
                .rules
                .iter()
                .map(|r| RuleSummary {
                    name: r.name.clone(),
                    when: r.when.split_whitespace().collect::<Vec<_>>().join(" "),
                    action: r.action,
                    for_intervals: r.for_intervals,
                    severity: r.severity,
                })
                .collect(),
            steps: policy.steps.clone(),
        }
    }
}

/// A rollout as the page shows it: its status and the weights it asks for.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutView {
    /// The service.
    pub service: String,
    /// Phase, step, traffic, nodes, last decisions.
    pub status: RolloutStatus,
    /// The shadow's share in percent.
    pub shadow_weight: f64,
    /// The primary's share in percent.
    pub primary_weight: f64,
}

impl RolloutView {
    /// The view of `service`'s rollout.
    pub fn of(controller: &Controller, service: &str) -> Result<RolloutView, RolloutError> {
        let status = controller.status(service)?;
        let shadow = shadow_weight(&status.rollout);
        Ok(RolloutView {
            service: service.to_owned(),
            status,
            shadow_weight: shadow,
            primary_weight: 100.0 - shadow,
        })
    }
}

/// One service on the page.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceState {
    /// The service.
    pub service: String,
    /// Its policy.
    pub policy: Option<PolicySummary>,
    /// Its rollout.
    pub rollout: RolloutView,
    /// Its points and looks.
    pub history: ServiceHistory,
}

/// Everything the page shows.
#[derive(Clone, Debug, Serialize)]
pub struct State {
    /// When it was taken, Unix milliseconds.
    pub now_ms: u64,
    /// The services, by name.
    pub services: Vec<ServiceState>,
}

impl State {
    /// The state now.
    pub fn of(dashboard: &Dashboard) -> Result<State, RolloutError> {
        let mut services = Vec::new();
        {
            let controller = lock(&dashboard.controller);
            for service in controller.services() {
                let policy = controller.policy(&service).map(PolicySummary::of);
                let rollout = RolloutView::of(&controller, &service)?;
                services.push((service, policy, rollout));
            }
        }
        Ok(State {
            now_ms: now_ms(),
            services: services
                .into_iter()
                .map(|(service, policy, rollout)| ServiceState {
                    history: dashboard.history.service(&service),
                    service,
                    policy,
                    rollout,
                })
                .collect(),
        })
    }
}

/// Every rollout's view now.
pub fn rollouts(controller: &Mutex<Controller>) -> Vec<RolloutView> {
    let controller = lock(controller);
    controller
        .services()
        .iter()
        .filter_map(|s| RolloutView::of(&controller, s).ok())
        .collect()
}
