//! The analysis loop of `doppel serve`: one task per service that, every analysis interval of
//! its policy, takes the service's windows completed since its last look from the
//! [`WindowStore`], runs them through an [`Analyzer`] that sees the controller's rollout (step,
//! weight, age, paused), and turns what the analyzer decided into [`RolloutEvent`]s applied
//! through the [`Controller`].
//!
//! - A fired rule becomes `RolloutEvent::fired(at_ms, rule, action)`; its explanation goes into
//!   the decision log with the controller's note.
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
//! window is analysed once, with everything it will ever hold.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::analysis::{Analyzer, Evaluation, Outcome};
use crate::dashboard::History;
use crate::ingest::WindowStore;
use crate::policy::{Action, Policy};
use crate::rollout::{Controller, Input, Phase, Rollout, RolloutEvent, now_ms};
use crate::telemetry::Telemetry;

/// Past a window's end, how long the loop waits for a flush that arrived just before it.
const GRACE_MS: u64 = 100;

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
struct ServiceLoop {
    service: String,
    policy: Policy,
    run: Option<Run>,
    observers: Observers,
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

/// Runs the loops of every service under `controller` until `stop` completes.
pub async fn run(
    controller: SharedController,
    windows: Arc<WindowStore>,
    observers: Observers,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let policies: Vec<Policy> = {
        let guard = lock(&controller);
        guard
            .services()
            .iter()
            .filter_map(|s| guard.policy(s).cloned())
            .collect()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for policy in policies {
        let state = ServiceLoop {
            service: policy.service.clone(),
            policy,
            run: None,
            observers: observers.clone(),
        };
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
        state.tick(&controller, &windows, now_ms());
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
    /// One look: reads the windows completed by `now_ms` and applies what they decide.
    fn tick(&mut self, controller: &Mutex<Controller>, windows: &WindowStore, now_ms: u64) {
        self.record_windows(windows, now_ms);
        let Some(rollout) = lock(controller).rollout(&self.service).cloned() else {
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
        let mut evaluations = Vec::new();
        for window in windows.windows(&self.service, run.read_to_ms) {
            if window.end_ms > now_ms {
                break;
            }
            run.read_to_ms = window.end_ms;
            match run.analyzer.push(&window) {
                Ok(Some(evaluation)) => {
                    self.observers.telemetry.look(&evaluation);
                    self.observers
                        .history
                        .record_look(&self.service, &evaluation);
                    evaluations.push(evaluation);
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
        for evaluation in evaluations {
            self.apply(controller, &evaluation);
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
        let holding = match &evaluation.outcome {
            Outcome::Inconclusive { reason } => {
                tracing::info!(service, at_ms = evaluation.at_ms, reason, "inconclusive");
                return;
            }
            Outcome::Evaluated { holding } => holding,
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
            let why = &decision.explanation;
            if let Err(e) = controller.apply_explained(service, Input::Event(event), why) {
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
        if evaluation.decisions.is_empty() && !waiting && due {
            let event = RolloutEvent::pass(evaluation.at_ms);
            if let Err(e) = controller.apply(service, Input::Event(event)) {
                tracing::warn!(service, error = %e, "the rollout refused a pass");
            }
        }
    }
}
