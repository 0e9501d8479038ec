//! The [`Alerter`]: de-duplication, one bounded queue and one delivery worker per sink.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{PAGERDUTY_EVENTS_URL, check_url};
use super::{
    Action, AlertEvent, AlertKey, AlertsConfig, AlertsError, Notification, RetryConfig, Severity,
    SinkConfig, format,
};

/// What [`Alerter::notify`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notified {
    /// The condition started firing: a trigger was queued for every sink.
    Triggered,
    /// The condition was firing and stays so: nothing sent.
    StillFiring,
    /// The condition cleared: a resolve was queued for every sink.
    Resolved,
    /// The condition was not firing and still is not: nothing sent.
    NotFiring,
}

/// Delivery counts of one sink since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    /// The sink's name.
    pub name: String,
    /// The sink's kind (`slack`, `pagerduty`, `json`).
    pub kind: &'static str,
    /// Notifications put on the sink's queue.
    pub queued: u64,
    /// Notifications the sink accepted (a 2xx answer).
    pub delivered: u64,
    /// Attempts after a failed one.
    pub retries: u64,
    /// Notifications dropped because the sink's queue was full.
    pub dropped: u64,
    /// Notifications given up on (permanent error, attempts or time exhausted).
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    delivered: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct SinkHandle {
    name: String,
    kind: &'static str,
    queue: mpsc::Sender<Arc<Notification>>,
    counters: Arc<Counters>,
    worker: JoinHandle<()>,
}

/// The firing state of one condition.
struct Incident {
    severity: Severity,
    summary: String,
}

/// Sends alerts to the configured sinks, without ever making its caller wait on them.
pub struct Alerter {
    sinks: Vec<SinkHandle>,
    firing: Mutex<HashMap<AlertKey, Incident>>,
}

impl Alerter {
    /// Validates `config`, reads secrets from the environment, and starts one delivery worker
    /// per sink on the current Tokio runtime.
    pub fn start(config: &AlertsConfig) -> Result<Self, AlertsError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AlertsError::NoRuntime)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .connect_timeout(Duration::from_millis(config.request_timeout_ms))
            .user_agent(concat!("doppel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AlertsError::Client(e.to_string()))?;
        let mut sinks = Vec::with_capacity(config.sinks.len());
        for (index, sink) in config.sinks.iter().enumerate() {
            let name = sink.name(index);
            let target = Target::resolve(sink, index, &name)?;
            let (queue, inbox) = mpsc::channel(config.queue_capacity);
            let counters = Arc::new(Counters::default());
            let worker = runtime.spawn(
                Worker {
                    name: name.clone(),
                    target,
                    client: client.clone(),
                    retry: config.retry.clone(),
                    counters: counters.clone(),
                }
                .run(inbox),
            );
            sinks.push(SinkHandle {
                name,
                kind: sink.kind(),
                queue,
                counters,
                worker,
            });
        }
        Ok(Self {
            sinks,
            firing: Mutex::new(HashMap::new()),
        })
    }

    /// Takes the current state of a condition. Queues a trigger when it starts firing and a
    /// resolve when it clears; otherwise sends nothing. Never waits: a sink whose queue is full
    /// loses this notification, counted in its [`SinkStats::dropped`].
    pub fn notify(&self, event: AlertEvent) -> Notified {
        let notification = {
            let mut firing = self.firing.lock().unwrap_or_else(PoisonError::into_inner);
            match (event.firing, firing.contains_key(&event.key)) {
                (true, true) => return Notified::StillFiring,
                (false, false) => return Notified::NotFiring,
                (true, false) => {
                    firing.insert(
                        event.key.clone(),
                        Incident {
                            severity: event.severity,
                            summary: event.summary.clone(),
                        },
                    );
                    Notification {
                        action: Action::Trigger,
                        dedup_key: event.key.dedup_key(),
                        key: event.key,
                        severity: event.severity,
                        summary: event.summary,
                        details: event.details,
                        at_unix_ms: now_unix_ms(),
                    }
                }
                (false, true) => {
                    let incident = firing.remove(&event.key);
                    let (severity, first) = incident
                        .map(|i| (i.severity, i.summary))
                        .unwrap_or((event.severity, String::new()));
                    let summary = if event.summary.is_empty() {
                        format!("cleared: {first}")
                    } else {
                        event.summary
                    };
                    Notification {
                        action: Action::Resolve,
                        dedup_key: event.key.dedup_key(),
                        key: event.key,
                        severity,
                        summary,
                        details: event.details,
                        at_unix_ms: now_unix_ms(),
                    }
                }
            }
        };
        let action = notification.action;
        let notification = Arc::new(notification);
        for sink in &self.sinks {
            match sink.queue.try_send(notification.clone()) {
                Ok(()) => Counters::bump(&sink.counters.queued),
                Err(_) => {
                    Counters::bump(&sink.counters.dropped);
                    tracing::warn!(sink = %sink.name, dedup_key = %notification.dedup_key, "alert queue full, notification dropped");
                }
            }
        }
        match action {
            Action::Trigger => Notified::Triggered,
            Action::Resolve => Notified::Resolved,
        }
    }

    /// The conditions firing now.
    pub fn firing(&self) -> Vec<AlertKey> {
        let firing = self.firing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keys: Vec<AlertKey> = firing.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Delivery counts per sink, in config order.
    pub fn stats(&self) -> Vec<SinkStats> {
        self.sinks
            .iter()
            .map(|s| {
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                SinkStats {
                    name: s.name.clone(),
                    kind: s.kind,
                    queued: get(&s.counters.queued),
                    delivered: get(&s.counters.delivered),
                    retries: get(&s.counters.retries),
                    dropped: get(&s.counters.dropped),
                    failed: get(&s.counters.failed),
                }
            })
            .collect()
    }

    /// Stops taking notifications, lets the workers finish their queues for up to `grace`,
    /// then stops them. Returns the final stats.
    pub async fn shutdown(self, grace: Duration) -> Vec<SinkStats> {
        let stats_handles: Vec<(String, &'static str, Arc<Counters>)> = self
            .sinks
            .iter()
            .map(|s| (s.name.clone(), s.kind, s.counters.clone()))
            .collect();
        let deadline = tokio::time::Instant::now() + grace;
        for sink in self.sinks {
            drop(sink.queue);
            let mut worker = sink.worker;
            if tokio::time::timeout_at(deadline, &mut worker)
                .await
                .is_err()
            {
                worker.abort();
            }
        }
        stats_handles
            .into_iter()
            .map(|(name, kind, c)| SinkStats {
                name,
                kind,
                queued: c.queued.load(Ordering::Relaxed),
                delivered: c.delivered.load(Ordering::Relaxed),
                retries: c.retries.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
                failed: c.failed.load(Ordering::Relaxed),
            })
            .collect()
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A sink with its secrets read: where to send and in which format.
enum Target {
    Slack {
        url: reqwest::Url,
    },
    PagerDuty {
        url: reqwest::Url,
        routing_key: String,
        source: String,
    },
    Json {
        url: reqwest::Url,
        headers: HeaderMap,
    },
}

impl Target {
    fn resolve(sink: &SinkConfig, index: usize, name: &str) -> Result<Self, AlertsError> {
        let what = |field: &str| format!("alerts.sinks[{index}] ({name}).{field}");
        Ok(match sink {
            SinkConfig::Slack(s) => Self::Slack {
                url: check_url(&s.url.resolve(&what("url"))?, index, name)?,
            },
            SinkConfig::Pagerduty(s) => Self::PagerDuty {
                url: check_url(
                    s.url.as_deref().unwrap_or(PAGERDUTY_EVENTS_URL),
                    index,
                    name,
                )?,
                routing_key: s.routing_key.resolve(&what("routing_key"))?,
                source: s.source.clone().unwrap_or_else(|| "doppel".to_owned()),
            },
            SinkConfig::Json(s) => {
                let mut headers = HeaderMap::new();
                for (key, value) in &s.headers {
                    let field = what(&format!("headers.{key}"));
                    let header = HeaderName::try_from(key.as_str())
                        .map_err(|e| AlertsError::Config(format!("{field}: {e}")))?;
                    let value = HeaderValue::try_from(value.resolve(&field)?)
                        .map_err(|e| AlertsError::Config(format!("{field}: {e}")))?;
                    headers.insert(header, value);
                }
                Self::Json {
                    url: check_url(&s.url.resolve(&what("url"))?, index, name)?,
                    headers,
                }
            }
        })
    }

    fn request(&self, client: &reqwest::Client, n: &Notification) -> reqwest::RequestBuilder {
        match self {
            Self::Slack { url } => client.post(url.clone()).json(&format::slack(n)),
            Self::PagerDuty {
                url,
                routing_key,
                source,
            } => client
                .post(url.clone())
                .json(&format::pagerduty(n, routing_key, source)),
            Self::Json { url, headers } => client
                .post(url.clone())
                .headers(headers.clone())
                .json(&format::plain(n)),
        }
    }
}

/// Why one attempt failed.
enum Failure {
    /// Worth retrying (network error, timeout, 408, 429, 5xx), maybe after the server's wait.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying will not help (another 4xx).
    Permanent(String),
}

/// Delivers one sink's notifications in order, each with bounded retries.
struct Worker {
    name: String,
    target: Target,
    client: reqwest::Client,
    retry: RetryConfig,
    counters: Arc<Counters>,
}

impl Worker {
    async fn run(self, mut inbox: mpsc::Receiver<Arc<Notification>>) {
        while let Some(notification) = inbox.recv().await {
            self.deliver(&notification).await;
        }
    }

    async fn deliver(&self, n: &Notification) {
        let started = Instant::now();
        let mut backoff = self.retry.initial_backoff();
        let mut attempt = 1;
        let reason = loop {
            let remaining = self.retry.max_elapsed().saturating_sub(started.elapsed());
            let (reason, retry_after) = match self.attempt(n, remaining).await {
                Ok(()) => {
                    Counters::bump(&self.counters.delivered);
                    return;
                }
                Err(Failure::Permanent(reason)) => break reason,
                Err(Failure::Transient {
                    reason,
                    retry_after,
                }) => (reason, retry_after),
            };
            if attempt >= self.retry.max_attempts {
                break format!("{reason} (after {attempt} attempts)");
            }
            let wait = jittered(backoff)
                .max(retry_after.unwrap_or_default())
                .min(self.retry.max_backoff());
            if started.elapsed() + wait >= self.retry.max_elapsed() {
                break format!("{reason} (out of time after {attempt} attempts)");
            }
            tracing::debug!(sink = %self.name, attempt, error = %reason, wait_ms = wait.as_millis() as u64, "alert delivery failed, retrying");
            Counters::bump(&self.counters.retries);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.retry.max_backoff());
            attempt += 1;
        };
        Counters::bump(&self.counters.failed);
        tracing::warn!(sink = %self.name, dedup_key = %n.dedup_key, action = ?n.action, error = %reason, "alert not delivered");
    }

    async fn attempt(&self, n: &Notification, remaining: Duration) -> Result<(), Failure> {
        let mut request = self.target.request(&self.client, n);
        if !remaining.is_zero() {
            // Never let one attempt outlive the notification's time budget.
            request = request.timeout(remaining.min(Duration::from_secs(3600)));
        }
        let response = request.send().await.map_err(|e| Failure::Transient {
            reason: error_chain(e),
            retry_after: None,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let reason = format!("HTTP {status}");
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(Failure::Transient {
                reason,
                retry_after,
            })
        } else {
            Err(Failure::Permanent(reason))
        }
    }
}

/// Equal jitter: half the backoff, plus up to the other half at random, so retries from many
/// engines spread out but still back off.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    let extra = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(extra)
}

/// An error with its sources, on one line, without the URL (it may hold a secret).
fn error_chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
