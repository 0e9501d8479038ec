//! Alerts: tell people when a rule fires and when it clears.
//!
//! The decision loop calls [`Alerter::notify`] with the current state of a condition (a rule of
//! a rollout) each time it evaluates it. The alerter de-duplicates (a condition that stays
//! firing notifies once), sends a resolve when it clears, and delivers to every sink in the
//! background: one bounded queue and one worker per sink, retries with exponential backoff and
//! jitter bounded in attempts and time, a time limit per request. `notify` never waits on the
//! network: a full queue drops the notification and counts it, so a failing or hanging sink can
//! never hold up a decision.
//!
//! - [`config`]: the `alerts:` policy section ([`AlertsConfig`]), secrets from the environment.
//! - [`format`]: Slack incoming-webhook, PagerDuty Events API v2 and plain JSON bodies.
//! - [`alerter`]: [`Alerter`], de-duplication, queues, delivery, [`SinkStats`].
//!
//! Formats and fields are documented in `docs/alerts.md`.

#[cfg(feature = "runtime")]
pub mod alerter;
pub mod config;
pub mod format;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "runtime")]
pub use alerter::{Alerter, Notified, SinkStats};
pub use config::{AlertsConfig, RetryConfig, Secret, SinkConfig};

/// How bad it is, in PagerDuty's four levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Act now.
    Critical,
    /// Something failed.
    Error,
    /// Worth a look.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// The lowercase name, as PagerDuty spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

/// What fires: a rule of a rollout. One key is one incident at a time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    /// The rollout (for example `checkout/v2.14`).
    pub rollout: String,
    /// The rule id within the policy.
    pub rule: String,
}

impl AlertKey {
    /// A key for `rule` of `rollout`.
    pub fn new(rollout: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            rollout: rollout.into(),
            rule: rule.into(),
        }
    }

    /// The incident's dedup key, stable for the key: `doppel/<rollout>/<rule>`.
    pub fn dedup_key(&self) -> String {
        format!("doppel/{}/{}", self.rollout, self.rule)
    }
}

/// The current state of a condition, as the decision loop sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertEvent {
    /// Which condition.
    pub key: AlertKey,
    /// Whether it holds now.
    pub firing: bool,
    /// How bad it is (used when it starts firing).
    pub severity: Severity,
    /// One line for people.
    pub summary: String,
    /// The decision's numbers: rates, counts, p-values, the test used.
    pub details: BTreeMap<String, serde_json::Value>,
}

impl AlertEvent {
    /// The condition holds.
    pub fn firing(key: AlertKey, severity: Severity, summary: impl Into<String>) -> Self {
        Self {
            key,
            firing: true,
            severity,
            summary: summary.into(),
            details: BTreeMap::new(),
        }
    }

    /// The condition no longer holds.
    pub fn clear(key: AlertKey, summary: impl Into<String>) -> Self {
        Self {
            key,
            firing: false,
            severity: Severity::Info,
            summary: summary.into(),
            details: BTreeMap::new(),
        }
    }

    /// Adds one number or fact to the details.
    pub fn with_detail(
        mut self,
        name: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.details.insert(name.into(), value.into());
        self
    }
}

/// Trigger or resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The incident starts.
    Trigger,
    /// The incident ends.
    Resolve,
}

/// One message to every sink, built from an event after de-duplication.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    /// Trigger or resolve.
    pub action: Action,
    /// The condition.
    pub key: AlertKey,
    /// The incident's key, the same for its trigger and its resolve.
    pub dedup_key: String,
    /// The trigger's severity (a resolve repeats it).
    pub severity: Severity,
    /// One line for people.
    pub summary: String,
    /// The decision's numbers.
    pub details: BTreeMap<String, serde_json::Value>,
    /// When the event was notified, Unix milliseconds.
    pub at_unix_ms: u64,
}

/// What can go wrong setting up alerts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertsError {
    /// The `alerts:` config is invalid.
    #[error("invalid alerts config: {0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("cannot build the alerts HTTP client: {0}")]
    Client(String),
    /// The alerter was started outside a Tokio runtime.
    #[error("the alerter needs a Tokio runtime to run its delivery workers")]
    NoRuntime,
}

impl AlertsError {
    /// A stable short code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Client(_) => "client",
            Self::NoRuntime => "no_runtime",
        }
    }
}
