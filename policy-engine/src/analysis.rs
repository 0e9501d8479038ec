//! Evaluating a policy over a stream of windows, as the live engine does and as `doppel
//! replay` does on a trace.
//!
//! Windows arrive in time order. Every `analysis.interval` (at the end of the window that
//! reaches the next evaluation time) the [`Analyzer`] looks once: it feeds the data that
//! arrived since the last look to the always-valid sequential tests, builds the analysed data
//! (everything since the current rollout step began, or the last `analysis.window` when the
//! data is sliding), runs the fixed-horizon tests on it, and, once both variants have served
//! `analysis.min_sample` requests since the rollout began, evaluates every rule. Before that
//! the interval is inconclusive, and the timeline says so: only the rules that read nothing
//! but what the engine measures itself (`synthetic.*`, `<variant>.resources.*`, `rollout.*`:
//! see [`crate::context::traffic_free`]) are evaluated, so a probe failing on a shadow without
//! user traffic is still caught. Those measurements come in through [`Analyzer::set_inputs`]
//! before the windows of a look. (Later, the
//! `compare.*.sufficient` flags say whether the analysed data itself reaches the minimum.)
//!
//! A rule fires when its condition has held for `for` consecutive evaluated intervals; it fires
//! once per episode (it must stop holding before it can fire again). A `shift` or `promote`
//! rule also waits, without firing, while the rollout is paused or the current step's hold
//! time has not passed (and a shift needs a next step). Each firing is a
//! [`Decision`] with the values that made it hold and the statistics' explanation. Its effect
//! on the rollout is applied here, in a deliberately small state machine: `rollback` and
//! `promote` end the rollout, `pause` freezes it, `shift` moves to the next step once the
//! current step's hold time has passed. The full rollout state machine (acting on Envoy,
//! resuming, persistence) belongs to its own module; this one only keeps what the rules read.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::context::{Comparer, Comparison, LookInputs, RolloutContext, RuleContext, traffic_free};
use crate::metrics::{BoundsMismatch, ServiceWindow};
use crate::policy::{Action, DataScope, Policy, Rule, Severity};
use crate::resources::ResourceSample;
use crate::stats::StatsError;
use crate::synthetic::SyntheticRecord;

/// A rule that fired: what happened, when, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// When (the end of the window that completed the interval), Unix milliseconds.
    pub at_ms: u64,
    /// The rule's name.
    pub rule: String,
    /// The rule's action.
    pub action: Action,
    /// The rule's severity.
    pub severity: Severity,
    /// The context fields the condition reads, with their values at that moment.
    pub values: BTreeMap<String, serde_json::Value>,
    /// The condition, the statistics behind it, and what the action did to the rollout.
    pub explanation: String,
}

/// How an evaluation went.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// Rules were evaluated.
    Evaluated {
        /// The rules whose condition held, in policy order.
        holding: Vec<String>,
    },
    /// Too little traffic: only the rules that read no traffic were evaluated.
    Inconclusive {
        /// Why, with the numbers.
        reason: String,
        /// The traffic-free rules whose condition held, in policy order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        holding: Vec<String>,
    },
}

/// One look at the data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// Rollout step at the time of the look (before the decisions' effects).
    pub step: i64,
    /// How it went.
    pub outcome: Outcome,
    /// The rules that fired.
    pub decisions: Vec<Decision>,
    /// The synthetic probes' results the look saw, with each failure's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticRecord>,
    /// The resource numbers the look saw, and why any are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceSample>,
    /// Every rule as this look left it, in policy order (empty when inconclusive).
    pub rules: Vec<RuleState>,
}

/// One rule at one look: what it read, the p-value behind it, and where its streak stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleState {
    /// The rule's name.
    pub name: String,
    /// The rule's action.
    pub action: Action,
    /// Whether its condition held at this look.
    pub holds: bool,
    /// Consecutive evaluated intervals it has held (0 when it does not hold).
    pub streak: u32,
    /// The intervals it must hold to fire (`for`).
    pub for_intervals: u32,
    /// It fired at this look.
    pub fired: bool,
    /// The context fields the condition reads, with their values at this look.
    pub values: BTreeMap<String, serde_json::Value>,
    /// The p-value behind the rule, if it reads a statistical comparison: the p-value field it
    /// names, else the sequential p-value of the comparison it reads (errors first).
    pub p_value: Option<PValue>,
}

/// A p-value and the context field it comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PValue {
    /// The field, for example `compare.errors.sequential_p_value`.
    pub field: String,
    /// Its value.
    pub value: f64,
}

/// How the rollout ended, when it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// A rollback rule fired.
    RolledBack,
    /// A promote rule fired.
    Promoted,
}

/// A window the analysis cannot take.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The window starts before the previous one ended, or ends before it starts.
    #[error(
        "window [{start_ms}, {end_ms}) is out of order: the previous window ended at {previous_end_ms}"
    )]
    OutOfOrder {
        /// Its start.
        start_ms: u64,
        /// Its end.
        end_ms: u64,
        /// Where the previous one ended.
        previous_end_ms: u64,
    },
    /// Its histograms do not have the buckets of the earlier ones.
    #[error("{0}")]
    Buckets(#[from] BoundsMismatch),
    /// The statistics refused the data.
    #[error("statistics: {0}")]
    Stats(#[from] StatsError),
    /// A rule failed to evaluate.
    #[error("rule `{rule}` failed to evaluate: {message}")]
    Eval {
        /// The rule.
        rule: String,
        /// The CEL error.
        message: String,
    },
}

impl AnalysisError {
    /// A stable short code for logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            AnalysisError::OutOfOrder { .. } => "out_of_order",
            AnalysisError::Buckets(_) => "bucket_mismatch",
            AnalysisError::Stats(e) => e.code(),
            AnalysisError::Eval { .. } => "eval",
        }
    }
}

/// The rollout as the rules see it.
#[derive(Clone, Debug, PartialEq)]
struct Rollout {
    step: usize,
    weight: f64,
    step_started_ms: u64,
    paused: bool,
    ended: Option<End>,
}

/// Runs one policy over windows of its service.
pub struct Analyzer {
    policy: Policy,
    comparer: Comparer,
    rollout: Rollout,
    /// Data since the last look (fed to the sequential tests).
    pending: Option<ServiceWindow>,
    /// Data since the current step began.
    cumulative: Option<ServiceWindow>,
    /// Recent windows, for sliding data.
    recent: VecDeque<ServiceWindow>,
    last_end_ms: Option<u64>,
    next_look_ms: Option<u64>,
    /// Per rule: consecutive evaluated intervals it has held.
    streaks: Vec<u32>,
    /// Per rule: it fired in its current episode (it must stop holding to fire again).
    fired: Vec<bool>,
    /// Requests seen since the rollout began: (primary, shadow).
    seen: (u64, u64),
    /// What the engine measured itself, for the next looks.
    inputs: LookInputs,
}

impl Analyzer {
    /// An analyzer for `policy`, before any window.
    pub fn new(policy: Policy) -> Result<Analyzer, StatsError> {
        let comparer = Comparer::new(policy.analysis.alpha, policy.analysis.min_sample)?;
        let rules = policy.rules.len();
        Ok(Analyzer {
            rollout: Rollout {
                step: 0,
                weight: policy.traffic.percent.get(),
                step_started_ms: 0,
                paused: false,
                ended: None,
            },
            policy,
            comparer,
            pending: None,
            cumulative: None,
            recent: VecDeque::new(),
            last_end_ms: None,
            next_look_ms: None,
            streaks: vec![0; rules],
            fired: vec![false; rules],
            seen: (0, 0),
            inputs: LookInputs::default(),
        })
    }

    /// Sets what the engine measured itself (probe results, resource numbers): the looks that
    /// follow, until the next call, read them.
    pub fn set_inputs(&mut self, inputs: LookInputs) {
        self.inputs = inputs;
    }

    /// The rules a look evaluates: all of them when it has enough traffic (`conclusive`),
    /// else the traffic-free ones that neither shift nor promote.
    pub fn evaluated(&self, conclusive: bool) -> Vec<&Rule> {
        self.policy
            .rules
            .iter()
            .filter(|r| {
                conclusive
                    || (traffic_free(&r.fields)
                        && !matches!(r.action, Action::Shift | Action::Promote))
            })
            .collect()
    }

    /// The policy being run.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// How the rollout ended, if it has.
    pub fn ended(&self) -> Option<End> {
        self.rollout.ended
    }

    /// Where the rollout stands at `now_ms`, as the rules see it.
    pub fn rollout(&self, now_ms: u64) -> RolloutContext {
        RolloutContext {
            step: i64::try_from(self.rollout.step).unwrap_or(i64::MAX),
            weight: self.rollout.weight,
            age_s: now_ms.saturating_sub(self.rollout.step_started_ms) as f64 / 1000.0,
            paused: self.rollout.paused,
        }
    }

    /// Aligns the rollout the rules see with the controller's: `step` (1-based, 0 before the
    /// first step), its `weight`, when it began and whether it is paused. A new step starts
    /// fresh: its analysed data, rule streaks and firings are reset, as after a `shift`.
    pub fn sync(&mut self, step: usize, weight: f64, step_started_ms: u64, paused: bool) {
        if step != self.rollout.step {
            self.cumulative = None;
            self.streaks.iter_mut().for_each(|s| *s = 0);
            self.fired.iter_mut().for_each(|f| *f = false);
        }
        self.rollout.step = step;
        self.rollout.weight = weight;
        self.rollout.step_started_ms = step_started_ms;
        self.rollout.paused = paused;
        if self.next_look_ms.is_none() {
            self.next_look_ms =
                Some(step_started_ms.saturating_add(self.policy.analysis.interval_ms));
        }
    }

    /// Takes the next window; returns the evaluation it completed, if any. After the rollout
    /// ended, windows are accepted and ignored.
    pub fn push(&mut self, window: &ServiceWindow) -> Result<Option<Evaluation>, AnalysisError> {
        let previous_end_ms = self.last_end_ms.unwrap_or(window.start_ms);
        if window.start_ms < previous_end_ms || window.end_ms <= window.start_ms {
            return Err(AnalysisError::OutOfOrder {
                start_ms: window.start_ms,
                end_ms: window.end_ms,
                previous_end_ms,
            });
        }
        if self.rollout.ended.is_some() {
            self.last_end_ms = Some(window.end_ms);
            return Ok(None);
        }
        // Merge into copies first, so a window with foreign buckets changes nothing.
        let (mut pending, mut cumulative) = (self.pending.clone(), self.cumulative.clone());
        merge_into(&mut pending, window)?;
        merge_into(&mut cumulative, window)?;
        (self.pending, self.cumulative) = (pending, cumulative);
        self.last_end_ms = Some(window.end_ms);
        if let DataScope::Sliding { window_ms } = self.policy.analysis.data {
            self.recent.push_back(window.clone());
            let from = window.end_ms.saturating_sub(window_ms);
            while self.recent.front().is_some_and(|w| w.start_ms < from) {
                self.recent.pop_front();
            }
        }
        let interval = self.policy.analysis.interval_ms;
        let next = *self.next_look_ms.get_or_insert_with(|| {
            self.rollout.step_started_ms = window.start_ms;
            window.start_ms.saturating_add(interval)
        });
        if window.end_ms < next {
            return Ok(None);
        }
        // The next look is the first interval boundary after this window.
        let behind = (window.end_ms - next) / interval + 1;
        self.next_look_ms = Some(next.saturating_add(behind.saturating_mul(interval)));
        self.look(window.end_ms).map(Some)
    }

    fn analysed(&self) -> Result<ServiceWindow, AnalysisError> {
        match self.policy.analysis.data {
            DataScope::Cumulative => Ok(self.cumulative.clone().unwrap_or_default()),
            DataScope::Sliding { .. } => {
                let mut out: Option<ServiceWindow> = None;
                for w in &self.recent {
                    merge_into(&mut out, w)?;
                }
                Ok(out.unwrap_or_default())
            }
        }
    }

    fn look(&mut self, at_ms: u64) -> Result<Evaluation, AnalysisError> {
        let new = self.pending.take().unwrap_or_default();
        let analysed = self.analysed()?;
        let comparison = self.comparer.look(&new, &analysed)?;
        let step = i64::try_from(self.rollout.step).unwrap_or(i64::MAX);
        let min = self.policy.analysis.min_sample;
        self.seen.0 = self.seen.0.saturating_add(new.primary.requests);
        self.seen.1 = self.seen.1.saturating_add(new.shadow.requests);
        let (p, s) = self.seen;
        let inconclusive = (p < min || s < min)
            .then(|| format!("so far primary has {p} requests, shadow {s}; rules need {min} each"));
        if inconclusive.is_some() && self.evaluated(false).is_empty() {
            return Ok(Evaluation {
                at_ms,
                step,
                outcome: Outcome::Inconclusive {
                    reason: inconclusive.unwrap_or_default(),
                    holding: Vec::new(),
                },
                decisions: Vec::new(),
                synthetic: self.inputs.synthetic.clone(),
                resources: self.inputs.resources.clone(),
                rules: Vec::new(),
            });
        }
        let rollout = self.rollout(at_ms);
        let context = RuleContext::new(
            &analysed,
            &comparison,
            min,
            rollout,
            &self.policy.traffic.custom_metrics,
            &self.inputs,
        );
        let cel = context.to_cel().map_err(|e| AnalysisError::Eval {
            rule: "(the context itself)".to_string(),
            message: e.to_string(),
        })?;
        let json = context.to_json();
        let mut holding = Vec::new();
        let mut fired = Vec::new();
        for (i, rule) in self.policy.rules.iter().enumerate() {
            // Without enough traffic, only traffic-free rules run, and none may step up or
            // promote: no data is never a pass.
            if inconclusive.is_some()
                && (!traffic_free(&rule.fields)
                    || matches!(rule.action, Action::Shift | Action::Promote))
            {
                continue;
            }
            let holds = match rule.program.execute(&cel) {
                Ok(cel::Value::Bool(b)) => b,
                // A resource query without a number leaves its field out: no data is not a
                // pass nor a failure, so the rule simply does not hold this time.
                Err(e) if reads_missing_resource(rule, &context) => {
                    tracing::debug!(rule = rule.name, error = %e, "rule reads a resource without data");
                    false
                }
                Ok(other) => {
                    return Err(AnalysisError::Eval {
                        rule: rule.name.clone(),
                        message: format!("evaluated to {other:?}, not a bool"),
                    });
                }
                Err(e) => {
                    return Err(AnalysisError::Eval {
                        rule: rule.name.clone(),
                        message: e.to_string(),
                    });
                }
            };
            if holds {
                holding.push(rule.name.clone());
                self.streaks[i] = self.streaks[i].saturating_add(1);
                if self.streaks[i] >= rule.for_intervals
                    && !self.fired[i]
                    && self.gate_open(rule.action, at_ms)
                {
                    self.fired[i] = true;
                    fired.push(i);
                }
            } else {
                self.streaks[i] = 0;
                self.fired[i] = false;
            }
        }
        // A rollback or pause in this interval closes the gate of shift and promote rules:
        // they have not fired, and may when the rollout moves again.
        let stops = fired.iter().any(|&i| {
            matches!(
                self.policy.rules[i].action,
                Action::Rollback | Action::Pause
            )
        });
        if stops {
            fired.retain(|&i| {
                let gated = matches!(self.policy.rules[i].action, Action::Shift | Action::Promote);
                if gated {
                    self.fired[i] = false;
                }
                !gated
            });
        }
        let mut decisions = Vec::new();
        let rules = self
            .policy
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| RuleState {
                name: rule.name.clone(),
                action: rule.action,
                holds: holding.contains(&rule.name),
                streak: self.streaks[i],
                for_intervals: rule.for_intervals,
                fired: fired.contains(&i),
                values: values(rule, &json),
                p_value: p_value(rule, &json),
            })
            .collect();
        let effects = self.apply(&fired, at_ms);
        for (i, effect) in fired.into_iter().zip(effects) {
            let rule = &self.policy.rules[i];
            decisions.push(Decision {
                at_ms,
                rule: rule.name.clone(),
                action: rule.action,
                severity: rule.severity,
                values: values(rule, &json),
                explanation: explain(rule, &comparison, self.inputs.synthetic.as_ref(), &effect),
            });
        }
        let outcome = match inconclusive {
            Some(reason) => Outcome::Inconclusive { reason, holding },
            None => Outcome::Evaluated { holding },
        };
        Ok(Evaluation {
            at_ms,
            step,
            outcome,
            decisions,
            synthetic: self.inputs.synthetic.clone(),
            resources: self.inputs.resources.clone(),
            rules,
        })
    }

    /// Whether an action can take effect now: a shift or a promotion waits (without firing)
    /// until the rollout is not paused and the current step's hold time has passed, and a
    /// shift needs a next step. Other actions always can.
    fn gate_open(&self, action: Action, at_ms: u64) -> bool {
        let r = &self.rollout;
        let hold_ms = r
            .step
            .checked_sub(1)
            .and_then(|i| self.policy.steps.get(i))
            .map_or(0, |s| s.hold_ms);
        let held = at_ms.saturating_sub(r.step_started_ms) >= hold_ms;
        match action {
            Action::Shift => !r.paused && held && r.step < self.policy.steps.len(),
            Action::Promote => !r.paused && held,
            Action::Alert | Action::Pause | Action::Rollback => true,
        }
    }

    /// Applies the fired rules' actions, most decisive first (rollback, pause, promote,
    /// shift, alert); returns what each one did, in the order given.
    fn apply(&mut self, fired: &[usize], at_ms: u64) -> Vec<String> {
        let rank = |a: Action| match a {
            Action::Rollback => 0,
            Action::Pause => 1,
            Action::Promote => 2,
            Action::Shift => 3,
            Action::Alert => 4,
        };
        let mut order: Vec<usize> = (0..fired.len()).collect();
        order.sort_by_key(|&k| rank(self.policy.rules[fired[k]].action));
        let mut effects = vec![String::new(); fired.len()];
        for k in order {
            let action = self.policy.rules[fired[k]].action;
            effects[k] = self.effect(action, at_ms);
        }
        effects
    }

    fn effect(&mut self, action: Action, at_ms: u64) -> String {
        if let Some(end) = self.rollout.ended {
            return format!("no effect: the rollout already ended ({end:?})");
        }
        let (step, weight, paused) = (self.rollout.step, self.rollout.weight, self.rollout.paused);
        let held_ms = at_ms.saturating_sub(self.rollout.step_started_ms);
        let hold_ms = step
            .checked_sub(1)
            .and_then(|i| self.policy.steps.get(i))
            .map_or(0, |s| s.hold_ms);
        match action {
            Action::Alert => format!("alert sent to {}", sinks(self.policy.alerts.as_ref())),
            Action::Rollback => {
                self.rollout.ended = Some(End::RolledBack);
                self.rollout.weight = 0.0;
                "rollout rolled back: all traffic to the primary".to_string()
            }
            Action::Pause => {
                self.rollout.paused = true;
                format!("rollout paused at {weight}% to the shadow")
            }
            Action::Promote | Action::Shift if paused => {
                format!("no effect: the rollout is paused at {weight}%")
            }
            Action::Promote | Action::Shift if held_ms < hold_ms => format!(
                "no effect yet: step {step} is held for {} s, {} s have passed",
                hold_ms / 1000,
                held_ms / 1000
            ),
            Action::Promote => {
                self.rollout.ended = Some(End::Promoted);
                self.rollout.weight = 100.0;
                "rollout promoted: the shadow becomes the primary".to_string()
            }
            Action::Shift => match self.policy.steps.get(step) {
                Some(next) => {
                    let weight = next.weight.get();
                    self.rollout.step = step + 1;
                    self.rollout.weight = weight;
                    self.rollout.step_started_ms = at_ms;
                    self.cumulative = None;
                    self.streaks.iter_mut().for_each(|s| *s = 0);
                    self.fired.iter_mut().for_each(|f| *f = false);
                    format!("shifted to step {}: {weight}% to the shadow", step + 1)
                }
                None => format!("no effect: already at the last step ({weight}%)"),
            },
        }
    }
}

fn sinks(alerts: Option<&crate::alerts::AlertsConfig>) -> String {
    match alerts {
        Some(a) if !a.sinks.is_empty() => a
            .sinks
            .iter()
            .enumerate()
            .map(|(i, s)| s.name(i))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "no sink (the policy lists none)".to_string(),
    }
}

/// Whether `rule` reads a `<variant>.resources.<name>` that this look has no number for.
fn reads_missing_resource(rule: &Rule, context: &RuleContext) -> bool {
    rule.fields.iter().any(|f| {
        let (map, rest) = if let Some(rest) = f.strip_prefix("primary.resources.") {
            (&context.primary.resources, rest)
        } else if let Some(rest) = f.strip_prefix("shadow.resources.") {
            (&context.shadow.resources, rest)
        } else {
            return false;
        };
        !map.contains_key(rest.split('.').next().unwrap_or(rest))
    })
}

fn merge_into(acc: &mut Option<ServiceWindow>, w: &ServiceWindow) -> Result<(), BoundsMismatch> {
    match acc {
        Some(a) => a.merge(w),
        None => {
            *acc = Some(w.clone());
            Ok(())
        }
    }
}

/// The values of the fields a rule reads, looked up in the context.
fn values(rule: &Rule, context: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    rule.fields
        .iter()
        .map(|path| {
            let value = path
                .split('.')
                .try_fold(context, |v, key| v.get(key))
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            (path.clone(), value)
        })
        .collect()
}

/// The p-value a rule rests on: a `*p_value` field it reads, else the sequential p-value of the
/// comparison it reads (errors before latency); `None` for a rule that reads no comparison.
fn p_value(rule: &Rule, context: &serde_json::Value) -> Option<PValue> {
    let named = rule.fields.iter().find(|f| f.ends_with("p_value")).cloned();
    let field = named.or_else(|| {
        ["errors", "latency"].iter().find_map(|kind| {
            let prefix = format!("compare.{kind}.");
            rule.fields
                .iter()
                .any(|f| f.starts_with(&prefix))
                .then(|| format!("{prefix}sequential_p_value"))
        })
    })?;
    let value = field
        .split('.')
        .try_fold(context, |v, key| v.get(key))?
        .as_f64()?;
    Some(PValue { field, value })
}

fn explain(
    rule: &Rule,
    comparison: &Comparison,
    synthetic: Option<&SyntheticRecord>,
    effect: &str,
) -> String {
    let when: Vec<&str> = rule.when.split_whitespace().collect();
    let mut parts = vec![format!(
        "`{}` held for {} interval(s)",
        when.join(" "),
        rule.for_intervals
    )];
    if rule.fields.iter().any(|f| f.starts_with("compare.errors.")) {
        parts.push(comparison.explain_errors());
    }
    if rule
        .fields
        .iter()
        .any(|f| f.starts_with("compare.latency."))
    {
        parts.push(comparison.explain_latency());
    }
    if let Some(synthetic) = synthetic
        && rule.fields.iter().any(|f| f.starts_with("synthetic."))
    {
        parts.push(synthetic.explain());
    }
    parts.push(effect.to_string());
    parts.join("; ")
}

#[cfg(test)]
mod rule_state_tests {
    use super::*;
    use crate::policy::parse;

    const POLICY: &str = r#"service: checkout
primary:
  cluster: a
shadow:
  cluster: b
traffic:
  mode: split
  percent: 1
analysis:
  interval: 1s
  min_sample: 10
  alpha: 0.01
rules:
  - name: worse
    when: compare.errors.worse
    action: rollback
  - name: rate
    when: shadow.error_rate > 0.05
    action: alert
    for: 3
  - name: p
    when: compare.latency.p_value < 0.5
    action: alert
steps:
  - weight: 10
    hold: 1h
"#;

    #[test]
    fn every_look_reports_each_rules_values_p_value_and_streak() {
        let policy = parse(POLICY).expect("policy");
        let mut analyzer = Analyzer::new(policy).expect("analyzer");
        let mut looks = Vec::new();
        for i in 0..3u64 {
            let mut w = ServiceWindow {
                service: "checkout".into(),
                start_ms: i * 1_000,
                end_ms: (i + 1) * 1_000,
                ..ServiceWindow::default()
            };
            w.primary.requests = 100;
            w.shadow.requests = 100;
            w.shadow.errors_5xx = 30;
            looks.extend(analyzer.push(&w).expect("window"));
        }
        let last = looks.last().expect("a look");
        let [worse, rate, p] = &last.rules[..] else {
            panic!("three rules: {:?}", last.rules);
        };
        assert_eq!(
            worse.p_value.as_ref().map(|p| p.field.as_str()),
            Some("compare.errors.sequential_p_value"),
            "a rule reading compare.errors rests on its sequential p-value"
        );
        assert!(worse.values.contains_key("compare.errors.worse"));
        assert_eq!(rate.p_value, None, "no comparison read");
        assert_eq!(rate.values["shadow.error_rate"], serde_json::json!(0.3));
        assert!(rate.holds && rate.streak == u32::try_from(looks.len()).unwrap_or(0));
        assert_eq!((rate.for_intervals, rate.fired), (3, looks.len() == 3));
        assert_eq!(
            p.p_value.as_ref().map(|p| p.field.as_str()),
            Some("compare.latency.p_value"),
            "a p-value field the rule names comes first"
        );
    }
}
