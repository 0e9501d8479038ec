//! The demo's scenarios: the policy each one runs under, the fault it injects into the shadow
//! after the healthy phase, and the verdict the engine should reach.

use clap::ValueEnum;
use serde_json::{Value, json};

/// What happens to the shadow in the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// The shadow stays healthy and is promoted through every step.
    Promote,
    /// After the healthy phase the shadow answers 20% of its requests with 500: rolled back.
    Errors,
    /// After the healthy phase the shadow gets four times slower: rolled back.
    Latency,
    /// Mirror mode: copies of read-only requests go to the shadow and the answers are compared;
    /// after the healthy phase the shadow fails 20% of the copies: rolled back.
    Mirror,
}

/// The phase the rollout must end in for the scenario to have shown what it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Promoted after the last step.
    Promoted,
    /// Rolled back by a rule.
    RolledBack,
}

impl Verdict {
    /// The phase name in the rollout status.
    pub fn phase(self) -> &'static str {
        match self {
            Verdict::Promoted => "promoted",
            Verdict::RolledBack => "rolled_back",
        }
    }
}

/// The demo upstreams' latency: a log-normal around this median (ms) with this sigma.
pub const LATENCY_MS: f64 = 12.0;
const LATENCY_SIGMA: f64 = 0.3;

/// How long each step holds, in seconds.
pub const HOLD_S: u64 = 12;

impl Scenario {
    /// The name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Promote => "promote",
            Scenario::Errors => "errors",
            Scenario::Latency => "latency",
            Scenario::Mirror => "mirror",
        }
    }

    /// The verdict this scenario should end in.
    pub fn expected(self) -> Verdict {
        match self {
            Scenario::Promote => Verdict::Promoted,
            Scenario::Errors | Scenario::Latency | Scenario::Mirror => Verdict::RolledBack,
        }
    }

    /// The fault posted to the shadow's `/admin/fault` after the healthy phase, with what it
    /// does in words; `None` for a healthy shadow.
    pub fn fault(self) -> Option<(Value, &'static str)> {
        match self {
            Scenario::Promote => None,
            Scenario::Errors | Scenario::Mirror => Some((
                json!({ "error_rate": 0.2 }),
                "the shadow now answers 20% of its requests with 500",
            )),
            Scenario::Latency => Some((
                json!({ "latency_ms": LATENCY_MS * 4.0 }),
                "the shadow is now four times slower",
            )),
        }
    }

    /// The flags both demo upstreams start with.
    pub fn upstream_flags() -> Vec<String> {
        vec![
            "--latency-ms".into(),
            LATENCY_MS.to_string(),
            "--latency-sigma".into(),
            LATENCY_SIGMA.to_string(),
        ]
    }

    /// The policy file the demo's engine runs (service `checkout`, primary `checkout-v1`,
    /// shadow `checkout-v2`), analysed every second.
    pub fn policy(self) -> String {
        let traffic = match self {
            Scenario::Mirror => {
                "traffic:\n  mode: mirror\n  percent: 50\n  mirror:\n    methods: [GET]\n    \
                 timeout_ms: 1000\n    max_in_flight: 64\n    latency_tolerance_ms: 200\n"
            }
            _ => "traffic:\n  mode: split\n  percent: 5\n  sticky:\n    header: x-user-id\n",
        };
        let rules = match self {
            Scenario::Mirror => {
                "rules:\n  - name: shadow-answers-differ\n    \
                 when: mirror.compared >= 50 && mirror.mismatches.status * 20 > mirror.compared\n    \
                 action: rollback\n    severity: critical\n"
            }
            _ => {
                "rules:\n  - name: shadow-errors-worse\n    \
                 when: compare.errors.worse\n    action: rollback\n    severity: critical\n  \
                 - name: shadow-slower\n    \
                 when: compare.latency.slower && compare.latency.effect > 0.65\n    \
                 action: rollback\n    severity: critical\n"
            }
        };
        format!(
            "# Written by `doppel demo --scenario {name}`.\n\
             service: checkout\n\
             primary:\n  cluster: checkout-v1\n\
             shadow:\n  cluster: checkout-v2\n\
             {traffic}\
             analysis:\n  interval: 1s\n  min_sample: 30\n  alpha: 0.01\n\
             {rules}\
             synthetic:\n  - name: cart\n    path: /cart\n    expect:\n      status: 200\n    \
             rate: 2/s\n\
             steps:\n  - weight: 10\n    hold: {HOLD_S}s\n  - weight: 25\n    hold: {HOLD_S}s\n  \
             - weight: 50\n    hold: {HOLD_S}s\n",
            name = self.name(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn demo_every_scenario_policy_compiles() {
        for scenario in Scenario::value_variants() {
            let text = scenario.policy();
            if let Err(problems) = crate::policy::parse(&text) {
                panic!("{}: {problems:?}\n{text}", scenario.name());
            }
        }
    }

    #[test]
    fn demo_faulty_scenarios_expect_a_rollback() {
        for scenario in Scenario::value_variants() {
            assert_eq!(
                scenario.fault().is_some(),
                scenario.expected() == Verdict::RolledBack,
                "{}",
                scenario.name()
            );
        }
    }
}
