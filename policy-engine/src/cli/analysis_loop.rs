//! The analysis loop of `doppel serve`: one task per service that, every analysis interval of
//! its policy, takes the service's windows completed since its last look from the
//! [`WindowStore`], runs them through an [`Analyzer`] that sees the controller's rollout (step,
//! weight, age, paused), and turns what the analyzer decided into [`RolloutEvent`]s applied
//! through the [`Controller`].
//!
//! - A fired rule becomes `RolloutEvent::fired(at_ms, rule, action)`; its explanation goes into
//!   the decision log with the controller's note, followed by the doppel ids of sample shadow
//!   requests from Envoy's access logs (5xx first, then the slowest) when there are any.
//! - An evaluated interval where nothing fired and no `rollback` or `pause` rule is holding
//!   (waiting out its `for`) becomes `RolloutEvent::pass(at_ms)`: the machine advances the step
//!   once its hold time has passed.
//! - An inconclusive interval (too few requests so far) sends nothing.
//!
//! Every tick also records the service's newly completed windows in the dashboard's
//! [`History`] (whether or not a rollout is running), and each evaluation there and in the
//! [`Telemetry`] counters.
//!
//! An analyzer lives as long as one rollout: it is made when the rollout becomes active and
//! dropped when it ends. Only complete windows (ended by the engine's clock) are read, so a
//! window is analysed once, with everything it will ever hold. A stretch of time without any
//! window (no Envoy flushed for the service) is read as an empty window, so the looks go on
//! without traffic: the traffic-free rules (synthetic probes, resources) still decide.
//!
//! What the engine measures itself is gathered before each look, in bounded time: the policy's
//! synthetic probes run in the background ([`Prober`]) and their results since the last look
//! are taken; the resource queries run against Prometheus ([`PrometheusSource`], each with its
//! time limit). Both go to the analyzer as [`LookInputs`].
//!
//! Alerts: a rule whose action is `alert`, `pause` or `rollback` opens an incident when it
//! fires and resolves it at the first look that evaluates it and finds it no longer holding.
//! [`Alerter::notify`] only queues (delivery, retries and a failing sink live in the alerter's
//! own tasks), so alerts never hold up a decision.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::accesslog::{self, SampleStore};
use crate::alerts::{AlertEvent, AlertKey, Alerter, Severity as AlertSeverity};
use crate::analysis::{Analyzer, Evaluation, Outcome};
use crate::context::LookInputs;
use crate::dashboard::History;
use crate::ingest::WindowStore;
use crate::metrics::ServiceWindow;
use crate::policy::{Action, Policy, Severity};
use crate::resources::PrometheusSource;
use crate::rollout::{Controller, Input, Phase, Rollout, RolloutEvent, now_ms};
use crate::synthetic::{Prober, Targets};
use crate::telemetry::Telemetry;

/// Past a window's end, how long the loop waits for a flush that arrived just before it.
const GRACE_MS: u64 = 100;
/// Sample requests a decision names.
const EVIDENCE: usize = 5;

/// The shared controller, as the API holds it.
pub type SharedController = Arc<Mutex<Controller>>;

fn lock(controller: &Mutex<Controller>) -> MutexGuard<'_, Controller> {
    // The controller commits before it changes memory: a panic leaves it consistent.
    controller
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One analyzer for one running rollout.
struct Run {
    analyzer: Analyzer,
    /// The shadow version it judges.
    version: Option<String>,
    /// The end of the last window pushed (or the rollout's start).
    read_to_ms: u64,
}

/// One service's loop state.
pub struct ServiceLoop {
    service: String,
    policy: Policy,
    run: Option<Run>,
    samples: Arc<SampleStore>,
    observers: Observers,
    /// The controller's policy generation this loop judges by (a reload bumps it).
    generation: u64,
    /// The store's window length: gaps are filled up to a multiple of it.
    window_ms: u64,
    prober: Option<Prober>,
    resources: Option<PrometheusSource>,
    alerter: Option<Alerter>,
}

impl ServiceLoop {
    /// The loop of `policy`'s service: starts its probes against `targets` and its alerter
    /// (both on the current Tokio runtime) and builds its Prometheus client. Errors name the
    /// service and what is wrong (no hosts to probe, an alert secret not set...).
    pub fn new(policy: Policy, targets: Targets, window_ms: u64) -> Result<ServiceLoop, String> {
        let service = policy.service.clone();
        let fail = |e: String| format!("service `{service}`: {e}");
        let prober = if policy.synthetic.is_empty() {
            None
        } else {
            Some(Prober::start(&policy.synthetic, targets).map_err(fail)?)
        };
        let resources = match &policy.resources {
            Some(config) => Some(PrometheusSource::new(config).map_err(|e| fail(e.to_string()))?),
            None => None,
        };
        let alerter = match &policy.alerts {
            Some(config) => Some(Alerter::start(config).map_err(|e| fail(e.to_string()))?),
            None => None,
        };
        Ok(ServiceLoop {
            service: service.clone(),
            policy,
            run: None,
            samples: Arc::new(SampleStore::new()),
            observers: Observers::default(),
            generation: 0,
            window_ms: window_ms.max(1),
            prober,
            resources,
            alerter,
        })
    }

    /// What the engine measures itself for the next look: the probes' results since the last
    /// one, and (while a rollout runs) the resource numbers. Takes at most the resource
    /// queries' time limit.
    async fn measure(&self, active: bool) -> LookInputs {
        let synthetic = self.prober.as_ref().map(Prober::take);
        let resources = match (&self.resources, active) {
            (Some(source), true) => Some(source.sample().await),
            _ => None,
        };
        LookInputs {
            synthetic,
            resources,
        }
    }
}

/// Where the loop reports what it saw: the dashboard's history and the engine's counters.
#[derive(Clone, Debug, Default)]
pub struct Observers {
    /// Windows and evaluations, for the dashboard.
    pub history: Arc<History>,
    /// Looks, rules evaluated, decisions, errors.
    pub telemetry: Arc<Telemetry>,
}

/// The analysis window length the store should use for these policies: the shortest analysis
/// interval (so every look has its own window), at most `default_ms`.
pub fn window_ms<'a>(policies: impl IntoIterator<Item = &'a Policy>, default_ms: u64) -> u64 {
    policies
        .into_iter()
        .map(|p| p.analysis.interval_ms)
        .min()
        .map_or(default_ms, |m| m.clamp(1, default_ms))
}

/// The loops of every service under `controller`, ready to run: probes and alerters
/// started, Prometheus clients built. Call inside the Tokio runtime.
pub fn prepare(controller: &SharedController, window_ms: u64) -> Result<Vec<ServiceLoop>, String> {
    let guard = lock(controller);
    guard
        .services()
        .iter()
        .filter_map(|s| guard.policy(s).cloned())
        .map(|policy| {
            let targets = guard.targets(&policy.service).unwrap_or_default();
            ServiceLoop::new(policy, targets, window_ms)
        })
        .collect()
}

/// Runs `loops` (from [`prepare`]) until `stop` completes; decisions name sample requests
/// from `samples`.
pub async fn run(
    loops: Vec<ServiceLoop>,
    controller: SharedController,
    windows: Arc<WindowStore>,
    samples: Arc<SampleStore>,
    observers: Observers,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for mut state in loops {
        state.samples = Arc::clone(&samples);
        state.observers = observers.clone();
        tasks.spawn(service_loop(
            state,
            Arc::clone(&controller),
            Arc::clone(&windows),
        ));
    }
    stop.await;
    tasks.shutdown().await;
}

/// Ticks every `interval_ms`, just after each multiple of it on the wall clock, so a look
/// comes right after the window it reads is complete.
async fn service_loop(
    mut state: ServiceLoop,
    controller: SharedController,
    windows: Arc<WindowStore>,
) {
    let interval_ms = state.policy.analysis.interval_ms.max(1);
    let now = now_ms();
    let first = interval_ms - now % interval_ms + GRACE_MS;
    let mut ticks = tokio::time::interval_at(
        Instant::now() + Duration::from_millis(first),
        Duration::from_millis(interval_ms),
    );
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let active = lock(&controller)
            .rollout(&state.service)
            .and_then(view)
            .is_some();
        let inputs = state.measure(active).await;
        state.tick(&controller, &windows, now_ms(), inputs);
    }
}

/// A window without data for `[start_ms, end_ms)`: a stretch no Envoy reported on.
fn empty(service: &str, start_ms: u64, end_ms: u64) -> ServiceWindow {
    ServiceWindow {
        service: service.to_owned(),
        start_ms,
        end_ms,
        ..ServiceWindow::default()
    }
}

/// The rollout as the analyzer sees it: (step, 1-based; weight; step start; paused).
fn view(rollout: &Rollout) -> Option<(usize, f64, u64, bool)> {
    let (step, since_ms, paused) = match &rollout.phase {
        Phase::Shadowing { step, since_ms } => (*step, *since_ms, false),
        Phase::Paused { step, at_ms, .. } => (*step, *at_ms, true),
        _ => return None,
    };
    let weight = rollout.plan.get(step)?.weight;
    Some((step + 1, weight, since_ms, paused))
}

impl ServiceLoop {
    /// One look: reads the windows completed by `now_ms` (empty ones for gaps) and applies
    /// what they decide, with `inputs` measured by the engine itself.
    fn tick(
        &mut self,
        controller: &Mutex<Controller>,
        windows: &WindowStore,
        now_ms: u64,
        inputs: LookInputs,
    ) {
        self.record_windows(windows, now_ms);
        let (rollout, reloaded) = {
            let guard = lock(controller);
            let generation = guard.policy_generation(&self.service);
            let reloaded = (generation != self.generation)
                .then(|| {
                    guard
                        .policy(&self.service)
                        .cloned()
                        .map(|p| (generation, p))
                })
                .flatten();
            (guard.rollout(&self.service).cloned(), reloaded)
        };
        if let Some((generation, policy)) = reloaded {
            // The new rules judge from the step's start; the rollout itself is untouched.
            tracing::info!(
                service = self.service,
                generation,
                "analysis follows the reloaded policy"
            );
            self.generation = generation;
            self.policy = policy;
            self.run = None;
        }
        let Some(rollout) = rollout else {
            return;
        };
        let Some((step, weight, since_ms, paused)) = view(&rollout) else {
            self.run = None;
            return;
        };
        if self
            .run
            .as_ref()
            .is_none_or(|run| run.version != rollout.version)
        {
            match Analyzer::new(self.policy.clone()) {
                Ok(analyzer) => {
                    tracing::info!(service = self.service, step, "analysis starts");
                    self.run = Some(Run {
                        analyzer,
                        version: rollout.version.clone(),
                        read_to_ms: since_ms,
                    });
                }
                Err(e) => {
                    tracing::error!(service = self.service, error = %e, "cannot analyse");
                    return;
                }
            }
        }
        let Some(run) = self.run.as_mut() else {
            return;
        };
        run.analyzer.sync(step, weight, since_ms, paused);
        run.analyzer.set_inputs(inputs);
        let mut evaluations = Vec::new();
        let complete_to = now_ms - now_ms % self.window_ms;
        let mut pending = windows.windows(&self.service, run.read_to_ms);
        pending.retain(|w| w.end_ms <= now_ms);
        // The stretches no Envoy reported on are empty windows: the looks go on.
        let mut with_gaps = Vec::new();
        let mut at = run.read_to_ms;
        for window in pending {
            if window.start_ms > at {
                with_gaps.push(empty(&self.service, at, window.start_ms));
            }
            at = at.max(window.end_ms);
            with_gaps.push(window);
        }
        if complete_to > at {
            with_gaps.push(empty(&self.service, at, complete_to));
        }
        for window in with_gaps {
            run.read_to_ms = window.end_ms;
            match run.analyzer.push(&window) {
                Ok(Some(evaluation)) => {
                    self.observers.telemetry.look(&evaluation);
                    self.observers
                        .history
                        .record_look(&self.service, &evaluation);
                    let conclusive = matches!(evaluation.outcome, Outcome::Evaluated { .. });
                    let evaluated: Vec<(String, Action, Severity)> = run
                        .analyzer
                        .evaluated(conclusive)
                        .into_iter()
                        .map(|r| (r.name.clone(), r.action, r.severity))
                        .collect();
                    evaluations.push((evaluation, evaluated));
                }
                Ok(None) => {}
                Err(e) => {
                    self.observers.telemetry.analysis_error(e.code());
                    tracing::warn!(
                        service = self.service,
                        code = e.code(),
                        error = %e,
                        "analysis skipped a window"
                    );
                }
            }
        }
        let key = format!(
            "{}/{}",
            self.service,
            rollout.version.as_deref().unwrap_or("unversioned")
        );
        for (evaluation, evaluated) in evaluations {
            self.alert(&key, &evaluation, &evaluated);
            self.apply(controller, &evaluation);
        }
    }

    /// Opens an incident for each alerting rule that fired, resolves the ones evaluated and
    /// no longer holding. Only queues: never waits on a sink.
    fn alert(
        &self,
        rollout: &str,
        evaluation: &Evaluation,
        evaluated: &[(String, Action, Severity)],
    ) {
        let Some(alerter) = &self.alerter else {
            return;
        };
        let holding = match &evaluation.outcome {
            Outcome::Evaluated { holding } | Outcome::Inconclusive { holding, .. } => holding,
        };
        for (rule, action, severity) in evaluated {
            if !matches!(action, Action::Alert | Action::Pause | Action::Rollback) {
                continue;
            }
            let key = AlertKey::new(rollout, rule.as_str());
            let event = if let Some(d) = evaluation.decisions.iter().find(|d| &d.rule == rule) {
                let severity = match severity {
                    Severity::Info => AlertSeverity::Info,
                    Severity::Warning => AlertSeverity::Warning,
                    Severity::Critical => AlertSeverity::Critical,
                };
                let mut event = AlertEvent::firing(
                    key,
                    severity,
                    format!("rule `{rule}` fired ({action}): {}", d.explanation),
                )
                .with_detail("action", action.as_str())
                .with_detail("at_ms", d.at_ms);
                for (field, value) in &d.values {
                    event = event.with_detail(field.clone(), value.clone());
                }
                event
            } else if !holding.contains(rule) {
                AlertEvent::clear(key, format!("rule `{rule}` no longer holds"))
            } else {
                continue;
            };
            let notified = alerter.notify(event);
            tracing::debug!(service = self.service, rule, ?notified, "alert");
        }
    }

    /// Records the service's windows completed by `now_ms` and not recorded yet.
    fn record_windows(&self, windows: &WindowStore, now_ms: u64) {
        let history = &self.observers.history;
        let since = history.last_window_end(&self.service).unwrap_or(0);
        for window in windows.windows(&self.service, since) {
            if window.end_ms > now_ms {
                break;
            }
            history.record_window(&window);
        }
    }

    /// Sends one evaluation's outcome to the controller.
    fn apply(&self, controller: &Mutex<Controller>, evaluation: &Evaluation) {
        let service = &self.service;
        if let Some(s) = &evaluation.synthetic {
            tracing::info!(
                service,
                at_ms = evaluation.at_ms,
                shadow_passed = s.shadow.passed,
                shadow_failed = s.shadow.failed,
                primary_passed = s.primary.passed,
                primary_failed = s.primary.failed,
                failures = ?s.failures,
                "synthetic probes"
            );
        }
        let (holding, conclusive) = match &evaluation.outcome {
            Outcome::Inconclusive { reason, holding } => {
                tracing::info!(service, at_ms = evaluation.at_ms, reason, "inconclusive");
                if evaluation.decisions.is_empty() {
                    return;
                }
                (holding, false)
            }
            Outcome::Evaluated { holding } => (holding, true),
        };
        let mut controller = lock(controller);
        for decision in &evaluation.decisions {
            tracing::info!(
                service,
                rule = decision.rule,
                action = %decision.action,
                explanation = decision.explanation,
                "rule fired"
            );
            self.observers
                .telemetry
                .decision("rule", decision.action.as_str());
            let event = RolloutEvent::fired(decision.at_ms, &decision.rule, decision.action);
            let evidence = self.samples.evidence(service, EVIDENCE);
            let why = if evidence.is_empty() {
                decision.explanation.clone()
            } else {
                format!(
                    "{}; sample shadow requests (doppel id): {}",
                    decision.explanation,
                    accesslog::describe(&evidence)
                )
            };
            if let Err(e) = controller.apply_explained(service, Input::Event(event), &why) {
                tracing::warn!(service, error = %e, "the rollout refused a decision");
            }
        }
        let waiting = self.policy.rules.iter().any(|rule| {
            matches!(rule.action, Action::Rollback | Action::Pause) && holding.contains(&rule.name)
        });
        // A pass only moves a shadowing rollout whose step has been held long enough; before
        // that (or while paused) it would only fill the decision log.
        let due = controller
            .rollout(service)
            .and_then(|r| match &r.phase {
                Phase::Shadowing { step, since_ms } => r
                    .plan
                    .get(*step)
                    .map(|s| evaluation.at_ms >= since_ms.saturating_add(s.hold_ms)),
                _ => None,
            })
            .unwrap_or(false);
        if conclusive && evaluation.decisions.is_empty() && !waiting && due {
            let event = RolloutEvent::pass(evaluation.at_ms);
            if let Err(e) = controller.apply(service, Input::Event(event)) {
                tracing::warn!(service, error = %e, "the rollout refused a pass");
            }
        }
    }
}
