//! A policy's `alerts:` section: the sinks and how hard to try delivering to them.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::AlertsError;

/// PagerDuty's Events API v2 endpoint, the default for `pagerduty` sinks.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// The `alerts:` section of a policy.
///
/// ```
/// use doppel_engine::alerts::AlertsConfig;
/// let config: AlertsConfig = serde_json::from_str(r#"{
///     "sinks": [
///         {"kind": "slack", "url": "https://hooks.slack.com/services/T/B/X"},
///         {"kind": "pagerduty", "routing_key": {"env": "PD_ROUTING_KEY"}},
///         {"kind": "json", "name": "audit", "url": "http://127.0.0.1:9000/alerts"}
///     ],
///     "retry": {"max_attempts": 4}
/// }"#).unwrap();
/// assert!(config.validate().is_ok());
/// assert_eq!(config.sinks[1].name(1), "pagerduty#1");
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Where alerts go; every sink gets every alert.
    pub sinks: Vec<SinkConfig>,
    /// Retry and backoff for failed deliveries.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Time limit of one HTTP request, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Notifications waiting per sink; past it new ones are dropped and counted.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
}

fn default_request_timeout_ms() -> u64 {
    5_000
}

fn default_queue_capacity() -> usize {
    256
}

/// Retries with exponential backoff and jitter, bounded in attempts and in time.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per notification, the first included.
    pub max_attempts: u32,
    /// The wait before the first retry, in milliseconds; it doubles after each failure.
    pub initial_backoff_ms: u64,
    /// The longest wait between two attempts, in milliseconds.
    pub max_backoff_ms: u64,
    /// Give up on a notification this long after its first attempt, in milliseconds.
    pub max_elapsed_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            max_elapsed_ms: 120_000,
        }
    }
}

impl RetryConfig {
    /// The wait before the first retry.
    pub fn initial_backoff(&self) -> Duration {
        Duration::from_millis(self.initial_backoff_ms)
    }

    /// The longest wait between two attempts.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }

    /// The time budget of one notification.
    pub fn max_elapsed(&self) -> Duration {
        Duration::from_millis(self.max_elapsed_ms)
    }
}

/// One alert destination.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// A Slack incoming webhook.
    Slack(SlackSink),
    /// PagerDuty Events API v2: trigger and resolve with a dedup key.
    Pagerduty(PagerDutySink),
    /// Any HTTP endpoint that takes doppel's plain JSON.
    Json(JsonSink),
}

/// A Slack incoming webhook.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSink {
    /// Name in stats and logs; defaults to `slack#<index>`.
    pub name: Option<String>,
    /// The webhook URL (a secret: give it as `{env: NAME}` to keep it out of the policy file).
    pub url: Secret,
}

/// A PagerDuty Events API v2 integration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutySink {
    /// Name in stats and logs; defaults to `pagerduty#<index>`.
    pub name: Option<String>,
    /// The integration's routing key (a secret).
    pub routing_key: Secret,
    /// The events endpoint; defaults to [`PAGERDUTY_EVENTS_URL`].
    pub url: Option<String>,
    /// The event's `source`; defaults to `doppel`.
    pub source: Option<String>,
}

/// A plain JSON webhook.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSink {
    /// Name in stats and logs; defaults to `json#<index>`.
    pub name: Option<String>,
    /// Where to POST (a secret if it carries a token).
    pub url: Secret,
    /// Extra request headers, for example `Authorization` (values are secrets).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
}

impl SinkConfig {
    /// The sink's name: its `name`, else `<kind>#<index>` with its position in `sinks`.
    pub fn name(&self, index: usize) -> String {
        let given = match self {
            Self::Slack(s) => &s.name,
            Self::Pagerduty(s) => &s.name,
            Self::Json(s) => &s.name,
        };
        given
            .clone()
            .unwrap_or_else(|| format!("{}#{index}", self.kind()))
    }

    /// The sink's kind as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Slack(_) => "slack",
            Self::Pagerduty(_) => "pagerduty",
            Self::Json(_) => "json",
        }
    }
}

/// A secret value: written inline, or `{env: NAME}` to read it from the environment at start.
/// Its `Debug` form never shows the value.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    /// The value itself.
    Inline(String),
    /// The name of an environment variable that holds the value.
    Env(EnvRef),
}

/// `{env: NAME}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvRef {
    /// The environment variable.
    pub env: String,
}

impl Secret {
    /// The value, reading the environment if needed; `what` names the field in errors.
    pub fn resolve(&self, what: &str) -> Result<String, AlertsError> {
        match self {
            Self::Inline(value) => Ok(value.clone()),
            Self::Env(EnvRef { env }) => std::env::var(env).map_err(|_| {
                AlertsError::Config(format!("{what}: environment variable {env} is not set"))
            }),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Secret(<inline>)"),
            Self::Env(EnvRef { env }) => write!(f, "Secret(env {env})"),
        }
    }
}

impl AlertsConfig {
    /// Checks the config without reading the environment: at least one sink, unique names,
    /// sane limits, and inline URLs that parse as http(s).
    pub fn validate(&self) -> Result<(), AlertsError> {
        let fail = |msg: String| Err(AlertsError::Config(msg));
        if self.sinks.is_empty() {
            return fail("alerts: at least one sink is needed".to_owned());
        }
        if self.request_timeout_ms == 0 {
            return fail("alerts: request_timeout_ms must be at least 1".to_owned());
        }
        if self.queue_capacity == 0 {
            return fail("alerts: queue_capacity must be at least 1".to_owned());
        }
        let r = &self.retry;
        if r.max_attempts == 0 {
            return fail("alerts.retry: max_attempts must be at least 1".to_owned());
        }
        if r.initial_backoff_ms > r.max_backoff_ms {
            return fail(format!(
                "alerts.retry: initial_backoff_ms {} is above max_backoff_ms {}",
                r.initial_backoff_ms, r.max_backoff_ms
            ));
        }
        let mut names = BTreeSet::new();
        for (index, sink) in self.sinks.iter().enumerate() {
            let name = sink.name(index);
            if name.trim().is_empty() {
                return fail(format!("alerts.sinks[{index}]: the name is empty"));
            }
            if !names.insert(name.clone()) {
                return fail(format!(
                    "alerts.sinks[{index}]: the name {name:?} is used twice"
                ));
            }
            let url = match sink {
                SinkConfig::Slack(s) => Some(&s.url),
                SinkConfig::Json(s) => Some(&s.url),
                SinkConfig::Pagerduty(s) => {
                    if let Secret::Inline(key) = &s.routing_key
                        && key.trim().is_empty()
                    {
                        return fail(format!(
                            "alerts.sinks[{index}] ({name}): routing_key is empty"
                        ));
                    }
                    if let Some(url) = &s.url {
                        check_url(url, index, &name)?;
                    }
                    None
                }
            };
            if let Some(Secret::Inline(url)) = url {
                check_url(url, index, &name)?;
            }
        }
        Ok(())
    }
}

/// An http(s) URL, or an error naming the sink.
pub(crate) fn check_url(url: &str, index: usize, name: &str) -> Result<url::Url, AlertsError> {
    let parsed = url::Url::parse(url).map_err(|e| {
        AlertsError::Config(format!("alerts.sinks[{index}] ({name}): invalid url: {e}"))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AlertsError::Config(format!(
            "alerts.sinks[{index}] ({name}): url scheme {:?} is not http or https",
            parsed.scheme()
        )));
    }
    Ok(parsed)
}
