//! The rollout state machine of one policy: pure transitions, no I/O, no clock.
//!
//! Every input carries its own time (`now_ms`, milliseconds since the Unix epoch), so replaying
//! the same inputs gives the same states. A step advances only when its hold time has passed
//! *and* an analysis passes (a [`Verdict::Pass`], or a rule whose action is `shift`) at or after
//! that moment; the last step's pass promotes.

use serde::{Deserialize, Serialize};

use crate::policy::{Action, Step};

/// One step of a rollout's plan: the shadow's share and the least time spent at it (the
/// policy's [`Step`], in a form the store can read back).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// The shadow's share in percent, in [0, 100].
    pub weight: f64,
    /// Least time at this step before it may advance, in milliseconds.
    pub hold_ms: u64,
}

impl From<&Step> for PlanStep {
    fn from(step: &Step) -> PlanStep {
        PlanStep {
            weight: step.weight.get(),
            hold_ms: step.hold_ms,
        }
    }
}

/// Where a rollout is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// No rollout running: all traffic on the primary.
    Pending,
    /// Shadowing at step `step` (0-based) of the plan since `since_ms`.
    Shadowing {
        /// The step's index in the plan.
        step: usize,
        /// When this step began (or resumed).
        since_ms: u64,
    },
    /// Frozen at step `step`: its weight stays, nothing advances until resumed.
    Paused {
        /// The step's index in the plan.
        step: usize,
        /// When it was paused.
        at_ms: u64,
        /// Why (a rule's name or `operator`).
        reason: String,
    },
    /// The shadow became the primary.
    Promoted {
        /// When.
        at_ms: u64,
    },
    /// All traffic went back to the primary.
    RolledBack {
        /// When.
        at_ms: u64,
        /// Why (a rule's name or `operator`).
        reason: String,
    },
}

impl Phase {
    /// A short name: `pending`, `shadowing`, `paused`, `promoted`, `rolled_back`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Shadowing { .. } => "shadowing",
            Phase::Paused { .. } => "paused",
            Phase::Promoted { .. } => "promoted",
            Phase::RolledBack { .. } => "rolled_back",
        }
    }

    /// The current step, while shadowing or paused.
    pub fn step(&self) -> Option<usize> {
        match self {
            Phase::Shadowing { step, .. } | Phase::Paused { step, .. } => Some(*step),
            _ => None,
        }
    }

    /// Whether a rollout is under way (shadowing or paused).
    pub fn is_active(&self) -> bool {
        self.step().is_some()
    }
}

/// An operator's command (CLI or API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Opens a rollout of shadow version `version` at the first step.
    Start {
        /// The shadow's version label (an image tag, a commit).
        version: String,
    },
    /// Freezes the rollout at its current step.
    Pause,
    /// Continues a paused rollout; the step's hold time starts again.
    Resume,
    /// Promotes now, whatever the step.
    Promote,
    /// Rolls back now.
    Rollback,
}

impl Command {
    /// The command's name, as in `doppel rollout NAME`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Start { .. } => "start",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Promote => "promote",
            Command::Rollback => "rollback",
        }
    }
}

/// The outcome of one analysis interval, as the rollout sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Enough data, and no rule fired.
    Pass,
    /// Rule `rule` fired with `action`.
    Fired {
        /// The rule's name.
        rule: String,
        /// What it asks for.
        action: Action,
    },
}

/// One input from the analysis loop: an analysis `Decision` maps into this (its `at_ms`, and
/// `rule` and `action` as [`Verdict::Fired`]); an interval where no rule fired is a pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEvent {
    /// When the analysis ran (ms since the epoch).
    pub at_ms: u64,
    /// What it found.
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl RolloutEvent {
    /// A passing analysis at `at_ms`.
    pub fn pass(at_ms: u64) -> RolloutEvent {
        RolloutEvent {
            at_ms,
            verdict: Verdict::Pass,
        }
    }

    /// Rule `rule` fired `action` at `at_ms` (what an analysis `Decision` becomes).
    pub fn fired(at_ms: u64, rule: &str, action: Action) -> RolloutEvent {
        RolloutEvent {
            at_ms,
            verdict: Verdict::Fired {
                rule: rule.to_owned(),
                action,
            },
        }
    }
}

/// An input to the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// An operator's command at `now_ms`.
    Command {
        /// The command.
        command: Command,
        /// When it arrived.
        now_ms: u64,
    },
    /// An analysis outcome.
    Event(RolloutEvent),
}

impl Input {
    /// When the input happened.
    pub fn at_ms(&self) -> u64 {
        match self {
            Input::Command { now_ms, .. } => *now_ms,
            Input::Event(event) => event.at_ms,
        }
    }
}

/// Why an input was refused; the state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The command does not apply in the current phase.
    #[error("`{command}` does not apply to a rollout that is {phase}")]
    NotNow {
        /// The command's name.
        command: &'static str,
        /// The current phase's name.
        phase: &'static str,
    },
    /// `start` with an empty version label.
    #[error("`start` needs a non-empty shadow version")]
    EmptyVersion,
}

/// One policy's rollout: its plan (the policy's steps), the shadow version, and its phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The policy's service.
    pub service: String,
    /// The steps, in order; never empty.
    pub plan: Vec<PlanStep>,
    /// The shadow version under test, once started.
    pub version: Option<String>,
    /// Where it is.
    pub phase: Phase,
    /// How many transitions it went through (a new state has a new generation).
    pub generation: u64,
}

/// What an accepted input did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Whether the phase or step changed (the traffic may then change).
    pub changed: bool,
    /// A one-line account for the decision log.
    pub note: String,
}

impl Rollout {
    /// A pending rollout of `service` over `steps`; with no steps, one step at `initial`
    /// (the policy's traffic percent) held 0 ms.
    pub fn new(service: &str, steps: &[Step], initial: PlanStep) -> Rollout {
        let plan = if steps.is_empty() {
            vec![initial]
        } else {
            steps.iter().map(PlanStep::from).collect()
        };
        Rollout {
            service: service.to_owned(),
            plan,
            version: None,
            phase: Phase::Pending,
            generation: 0,
        }
    }

    /// The step the rollout is at, while shadowing or paused.
    pub fn current_step(&self) -> Option<&PlanStep> {
        self.phase.step().and_then(|k| self.plan.get(k))
    }

    /// Applies one input: the new state in `self` and what happened, or why it was refused.
    pub fn apply(&mut self, input: &Input) -> Result<Outcome, Refused> {
        let outcome = match input {
            Input::Command { command, now_ms } => self.command(command, *now_ms)?,
            Input::Event(event) => self.event(event),
        };
        if outcome.changed {
            self.generation += 1;
        }
        Ok(outcome)
    }

    fn enter(&mut self, phase: Phase, note: String) -> Outcome {
        self.phase = phase;
        Outcome {
            changed: true,
            note,
        }
    }

    fn command(&mut self, command: &Command, now_ms: u64) -> Result<Outcome, Refused> {
        let refuse = |phase: &Phase| Refused::NotNow {
            command: command.name(),
            phase: phase.name(),
        };
        Ok(match (command, &self.phase) {
            (Command::Start { version }, phase) if !phase.is_active() => {
                if version.trim().is_empty() {
                    return Err(Refused::EmptyVersion);
                }
                self.version = Some(version.clone());
                let note = format!("operator started version {version} at step 1");
                self.enter(
                    Phase::Shadowing {
                        step: 0,
                        since_ms: now_ms,
                    },
                    note,
                )
            }
            (Command::Pause, Phase::Shadowing { step, .. }) => {
                let step = *step;
                self.enter(
                    Phase::Paused {
                        step,
                        at_ms: now_ms,
                        reason: "operator".to_owned(),
                    },
                    format!("operator paused at step {}", step + 1),
                )
            }
            (Command::Resume, Phase::Paused { step, .. }) => {
                let step = *step;
                self.enter(
                    Phase::Shadowing {
                        step,
                        since_ms: now_ms,
                    },
                    format!("operator resumed at step {}", step + 1),
                )
            }
            (Command::Promote, phase) if phase.is_active() => self.enter(
                Phase::Promoted { at_ms: now_ms },
                "operator promoted".to_owned(),
            ),
            (Command::Rollback, phase) if phase.is_active() => self.enter(
                Phase::RolledBack {
                    at_ms: now_ms,
                    reason: "operator".to_owned(),
                },
                "operator rolled back".to_owned(),
            ),
            (_, phase) => return Err(refuse(phase)),
        })
    }

    fn event(&mut self, event: &RolloutEvent) -> Outcome {
        let now = event.at_ms;
        let unchanged = |note: String| Outcome {
            changed: false,
            note,
        };
        let (step, since_ms) = match &self.phase {
            Phase::Shadowing { step, since_ms } => (*step, *since_ms),
            Phase::Paused { step, .. } => {
                // Frozen: only a rollback still acts, the rest waits for an operator.
                return match &event.verdict {
                    Verdict::Fired {
                        rule,
                        action: Action::Rollback,
                    } => self.enter(
                        Phase::RolledBack {
                            at_ms: now,
                            reason: rule.clone(),
                        },
                        format!("rule {rule} rolled back (paused at step {})", step + 1),
                    ),
                    _ => unchanged("paused: analysis noted".to_owned()),
                };
            }
            other => return unchanged(format!("ignored: rollout is {}", other.name())),
        };
        let held = now >= since_ms.saturating_add(self.plan[step].hold_ms);
        match &event.verdict {
            Verdict::Fired { rule, action } => match action {
                Action::Alert => unchanged(format!("rule {rule} alerted")),
                Action::Pause => self.enter(
                    Phase::Paused {
                        step,
                        at_ms: now,
                        reason: rule.clone(),
                    },
                    format!("rule {rule} paused at step {}", step + 1),
                ),
                Action::Rollback => self.enter(
                    Phase::RolledBack {
                        at_ms: now,
                        reason: rule.clone(),
                    },
                    format!("rule {rule} rolled back at step {}", step + 1),
                ),
                Action::Promote if held => self.enter(
                    Phase::Promoted { at_ms: now },
                    format!("rule {rule} promoted at step {}", step + 1),
                ),
                Action::Shift if held => self.advance(step, now, rule),
                Action::Promote | Action::Shift => {
                    unchanged(format!("rule {rule} ({action}) waits for the hold time"))
                }
            },
            Verdict::Pass if held => self.advance(step, now, "analysis"),
            Verdict::Pass => unchanged("analysis passed; hold time not over".to_owned()),
        }
    }

    fn advance(&mut self, step: usize, now: u64, by: &str) -> Outcome {
        if step + 1 < self.plan.len() {
            self.enter(
                Phase::Shadowing {
                    step: step + 1,
                    since_ms: now,
                },
                format!("{by} passed: step {} -> {}", step + 1, step + 2),
            )
        } else {
            self.enter(
                Phase::Promoted { at_ms: now },
                format!("{by} passed the last step: promoted"),
            )
        }
    }
}
