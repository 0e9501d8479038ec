//! The validated policy: what the analysis, the rollout and the filter config are built from.
//! Every value here has passed [`super::validate`]; constructors refuse what is out of range.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::Position;
use crate::alerts::AlertsConfig;
use crate::hosts::HostSelectionConfig;
use crate::resources::ResourcesConfig;
use crate::synthetic::Probe;

/// A policy, checked: clusters named, traffic in range, rules compiled and type-checked.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The service name (`[a-z0-9_-]`, 1 to 64 characters).
    pub service: String,
    /// The live deployment.
    pub primary: Primary,
    /// The candidate's Envoy cluster.
    pub shadow_cluster: String,
    /// Which requests reach the shadow, and how.
    pub traffic: Traffic,
    /// How often and on how much data the rules are evaluated.
    pub analysis: Analysis,
    /// The rules, in evaluation order.
    pub rules: Vec<Rule>,
    /// Promotion steps, strictly increasing weights.
    pub steps: Vec<Step>,
    /// Alert sinks and delivery (`None`: rules alert nobody).
    pub alerts: Option<AlertsConfig>,
    /// Resource queries (`None`: no `<variant>.resources` fields).
    pub resources: Option<ResourcesConfig>,
    /// How the shadow's hosts are chosen (`None`: the serve config's endpoints).
    pub hosts: Option<HostSelectionConfig>,
    /// Synthetic probes.
    pub synthetic: Vec<Probe>,
    /// What the shadow must not share with the primary.
    pub isolation: Isolation,
}

/// What the shadow must not share with the primary. The endpoints of the two clusters never
/// overlap (checked wherever they are known); named backends are checked here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Isolation {
    /// The shadow shares no state with the primary: probes may use any method.
    pub isolated: bool,
    /// Backends each variant reaches at its own addresses.
    pub backends: Vec<Backend>,
}

/// A named backend and the addresses each variant uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// Its name.
    pub name: String,
    /// The primary's addresses.
    pub primary: Vec<String>,
    /// The shadow's addresses (none in common with the primary's).
    pub shadow: Vec<String>,
}

impl Policy {
    /// The names of the resource queries the policy runs (the `<variant>.resources` fields).
    pub fn resource_names(&self) -> Vec<String> {
        resource_names(self.resources.as_ref())
    }
}

/// The query names of a resources section, sorted.
pub fn resource_names(resources: Option<&ResourcesConfig>) -> Vec<String> {
    resources
        .map(|r| r.templates().into_keys().collect())
        .unwrap_or_default()
}

/// The primary deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Primary {
    /// Its Envoy cluster.
    pub cluster: String,
    /// The previous stable version's cluster, to roll back to, if kept.
    pub previous: Option<String>,
}

/// A share of traffic in percent, in [0, 100].
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
pub struct Percent(f64);

impl Percent {
    /// No traffic at all.
    pub const ZERO: Percent = Percent(0.0);

    /// A percentage, or `None` when it is not a number in [0, 100].
    ///
    /// ```
    /// use doppel_engine::policy::Percent;
    /// assert_eq!(Percent::new(0.1).map(|p| p.get()), Some(0.1));
    /// assert!(Percent::new(100.5).is_none() && Percent::new(f64::NAN).is_none());
    /// ```
    pub fn new(value: f64) -> Option<Percent> {
        (0.0..=100.0).contains(&value).then_some(Percent(value))
    }

    /// The value in percent.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// How the filter treats chosen requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The shadow serves the chosen requests (canary).
    Split,
    /// The primary serves; a copy goes to the shadow and its answer is compared.
    Mirror,
    /// Nobody is chosen; stats are still kept.
    Off,
}

/// One header matcher of the filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Matcher {
    /// Lower-case header name.
    pub header: String,
    /// The test on its value.
    pub test: MatchTest,
}

/// The test a matcher applies to a header's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchTest {
    /// Equal to.
    Equals(String),
    /// Starts with.
    Prefix(String),
    /// One of.
    OneOf(Vec<String>),
}

/// Where the sticky key comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    /// A request header.
    Header(String),
    /// A cookie.
    Cookie(String),
}

/// Header names the filter writes (`None`: the filter's default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Headers {
    /// The variant header.
    pub variant: Option<String>,
    /// The request id header.
    pub id: Option<String>,
    /// The mirror marker header.
    pub mirror: Option<String>,
    /// The header naming the shadow's cluster for Envoy's mirror policy.
    pub mirror_to: Option<String>,
}

/// Mirror settings (`None`: the filter's default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Mirror {
    /// Who sends the copies (`None`: the filter's default, the filter).
    pub sender: Option<doppel_filter::config::Sender>,
    /// `:authority` of the copy.
    pub authority: Option<String>,
    /// Methods that may be copied.
    pub methods: Option<Vec<String>>,
    /// Largest body copied.
    pub max_body_bytes: Option<u64>,
    /// How long a copy may take, 1 to 60000 ms.
    pub timeout_ms: Option<u64>,
    /// Copies in flight per worker, 1 to 10000.
    pub max_in_flight: Option<u64>,
    /// Bytes of both bodies compared by digest.
    pub compare_body_bytes: Option<u64>,
    /// Extra latency a copy may take before it counts as a mismatch.
    pub latency_tolerance_ms: Option<u64>,
}

/// The traffic section, mirroring the filter's config.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Traffic {
    /// Split, mirror or off.
    pub mode: Mode,
    /// Share of matching requests chosen at the start of the rollout.
    pub percent: Percent,
    /// Matchers that must all hold.
    pub matchers: Vec<Matcher>,
    /// The user's key for sticky choice.
    pub sticky: Option<Sticky>,
    /// Server-Timing names recorded per variant.
    pub custom_metrics: Vec<String>,
    /// Whether client-sent doppel headers are trusted.
    pub trusted_control: bool,
    /// Who strips client-sent doppel headers (`None`: the filter's default, the filter; under
    /// full ADS the engine has Envoy strip them whatever this says).
    pub strip_control: Option<doppel_filter::config::Stripper>,
    /// Header names.
    pub headers: Headers,
    /// Mirror settings, present in mirror mode.
    pub mirror: Option<Mirror>,
}

/// Which data the rules see at each evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataScope {
    /// Everything since the current rollout step began.
    Cumulative,
    /// Only the last `window` of data.
    Sliding {
        /// The window's length in milliseconds.
        window_ms: u64,
    },
}

/// The analysis section.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Analysis {
    /// How often rules are evaluated, in milliseconds.
    pub interval_ms: u64,
    /// Requests each variant needs before rules are evaluated.
    pub min_sample: u64,
    /// False-alarm rate of the statistical tests, in (0, 0.5].
    pub alpha: f64,
    /// Cumulative or sliding data.
    pub data: DataScope,
}

/// What a rule does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Notify the alert sinks; the rollout goes on.
    Alert,
    /// Freeze the rollout at its current weight.
    Pause,
    /// Send all traffic back to the primary (or its previous version).
    Rollback,
    /// Move to the next promotion step.
    Shift,
    /// Make the shadow the new primary.
    Promote,
}

impl Action {
    /// Every action, in the order the docs list them.
    pub const ALL: [Action; 5] = [
        Action::Alert,
        Action::Pause,
        Action::Rollback,
        Action::Shift,
        Action::Promote,
    ];

    /// The name used in policy files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Pause => "pause",
            Action::Rollback => "rollback",
            Action::Shift => "shift",
            Action::Promote => "promote",
        }
    }

    /// The action named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The severity a rule with this action has when it does not say.
    pub fn default_severity(self) -> Severity {
        match self {
            Action::Alert | Action::Shift | Action::Promote => Severity::Info,
            Action::Pause => Severity::Warning,
            Action::Rollback => Severity::Critical,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How loud a rule is when it fires.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Someone should look.
    Warning,
    /// Someone must act now.
    Critical,
}

impl Severity {
    /// The severity named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Severity> {
        match name {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// The name used in policy files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A rule: a compiled CEL condition and the action it triggers.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique name within the policy.
    pub name: String,
    /// The CEL source, as written.
    pub when: String,
    /// The compiled condition (compiled once, evaluated every interval).
    pub program: Arc<cel::Program>,
    /// The context fields the condition reads (`shadow.error_rate`), sorted, for explanations.
    pub fields: Vec<String>,
    /// What happens when it fires.
    pub action: Action,
    /// Consecutive intervals the condition must hold before the rule fires (at least 1).
    pub for_intervals: u32,
    /// How loud it is.
    pub severity: Severity,
    /// Where `when` starts in the policy file.
    pub position: Position,
}

/// A promotion step: a shadow weight and the least time spent at it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Step {
    /// Shadow weight in percent.
    pub weight: Percent,
    /// Least time at this weight before a shift or promotion, in milliseconds.
    pub hold_ms: u64,
}

/// Parses a duration such as `500ms`, `10s`, `5m`, `1h30m`; `None` when it does not parse, is
/// zero, or exceeds a week.
///
/// ```
/// use doppel_engine::policy::parse_duration;
/// assert_eq!(parse_duration("1m30s").map(|d| d.as_millis()), Some(90_000));
/// assert_eq!(parse_duration("250ms").map(|d| d.as_millis()), Some(250));
/// assert!(parse_duration("10").is_none() && parse_duration("5 parsecs").is_none());
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    const WEEK_MS: u128 = 7 * 24 * 3600 * 1000;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total_ms: u128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 || digits > 9 {
            return None;
        }
        let number: u128 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ms += number * unit_ms;
        if total_ms > WEEK_MS {
            return None;
        }
    }
    let ms = u64::try_from(total_ms).ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}
