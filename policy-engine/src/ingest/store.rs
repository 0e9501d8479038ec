//! The windows: per service, a ring of time-bucketed [`ServiceWindow`]s that every Envoy's
//! flushes add into. Memory is bounded by services x windows kept, whatever the number of
//! Envoys: what is kept per Envoy lives in its [`Stream`] and goes when the stream ends.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use tokio::sync::watch;

use super::convert::{Field, Flush, MirrorStat, Update, Value};
use super::error::{Counts, IngestError};
use super::raw::RawMessage;
use super::registry::ClusterRegistry;
use super::stream::{CounterMode, Stream};
use crate::metrics::{BoundsMismatch, ServiceWindow};

/// Rejected metrics logged one by one per message; the rest are counted and summed up in one line.
const LOGGED_PER_MESSAGE: usize = 10;

/// How the store buckets and bounds its windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Length of one window in milliseconds (at least 1).
    pub window_ms: u64,
    /// Windows kept per service (at least 1); the oldest goes first.
    pub windows: usize,
    /// Services kept at most; metrics of further services are rejected.
    pub max_services: usize,
    /// Custom histograms per variant at most; further names are rejected.
    pub max_custom: usize,
    /// How the Envoys' sinks report counters.
    pub counters: CounterMode,
}

impl Default for StoreConfig {
    /// 10 s windows, one hour of them, 256 services, 32 custom metrics per variant, counters
    /// as deltas.
    fn default() -> Self {
        StoreConfig {
            window_ms: 10_000,
            windows: 360,
            max_services: 256,
            max_custom: 32,
            counters: CounterMode::Deltas,
        }
    }
}

/// What one message did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Metrics added into windows.
    pub accepted: usize,
    /// Metrics ignored (names doppel does not read).
    pub ignored: usize,
    /// Metrics rejected as malformed or over a limit.
    pub rejected: usize,
}

/// The engine's windows, shared by the ingestion server and the analysis loop.
#[derive(Debug)]
pub struct WindowStore {
    config: StoreConfig,
    registry: RwLock<ClusterRegistry>,
    rings: Mutex<BTreeMap<String, VecDeque<ServiceWindow>>>,
    counts: Counts,
    changed: watch::Sender<u64>,
}

impl WindowStore {
    /// An empty store; `window_ms` and `windows` below 1 are taken as 1.
    pub fn new(config: StoreConfig, registry: ClusterRegistry) -> Self {
        let config = StoreConfig {
            window_ms: config.window_ms.max(1),
            windows: config.windows.max(1),
            ..config
        };
        WindowStore {
            config,
            registry: RwLock::new(registry),
            rings: Mutex::new(BTreeMap::new()),
            counts: Counts::default(),
            changed: watch::Sender::new(0),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Replaces the cluster registry (for example when a policy is loaded); windows stay.
    pub fn set_registry(&self, registry: ClusterRegistry) {
        *self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner) = registry;
    }

    /// Accepted, ignored and rejected metrics so far, by code.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// A receiver that changes (to a new generation number) whenever new data lands.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// State for a new stream from `node`, in the configured counter mode.
    pub fn open_stream(&self, node: impl Into<String>) -> Stream {
        Stream::new(node, self.config.counters)
    }

    /// Converts one MetricsService message of `stream`, adds it to the window holding `now_ms`
    /// (Unix milliseconds), counts and logs what was not taken. The message's node, if any,
    /// names the stream; a stream's first message must carry one.
    pub fn ingest(
        &self,
        now_ms: u64,
        message: StreamMetricsMessage,
        stream: &mut Stream,
    ) -> IngestReport {
        self.counts.message();
        let flush = {
            let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
            Flush::from_message(message, &registry)
        };
        self.add_flush(now_ms, flush, stream)
    }

    /// [`WindowStore::ingest`] for a message as the server decodes it: the families doppel
    /// does not read are counted as `unknown_metric` without being decoded. Fails, counting
    /// nothing but the message, when a family that has to be decoded does not decode.
    pub fn ingest_raw(
        &self,
        now_ms: u64,
        message: RawMessage,
        stream: &mut Stream,
    ) -> Result<IngestReport, prost::DecodeError> {
        self.counts.message();
        let (message, unread) = message.triage()?;
        let mut flush = {
            let registry = self.registry.read().unwrap_or_else(PoisonError::into_inner);
            Flush::from_message(message, &registry)
        };
        flush.rejected.extend(unread);
        Ok(self.add_flush(now_ms, flush, stream))
    }

    fn add_flush(&self, now_ms: u64, flush: Flush, stream: &mut Stream) -> IngestReport {
        let mut errors = flush.rejected;
        match flush.node {
            Some(node) => stream.set_node(node),
            None if stream.messages() == 0 => errors.push(IngestError::MissingNode),
            None => {}
        }
        let (updates, refused) = stream.to_deltas(flush.updates);
        errors.extend(refused);
        let node = stream.node();
        let count = updates.len();
        let refused = self.apply(now_ms, updates);
        let mut report = IngestReport {
            accepted: count - refused.len(),
            ..IngestReport::default()
        };
        errors.extend(refused);
        self.counts
            .record(report.accepted as u64, errors.iter().map(IngestError::code));
        for error in &errors {
            if error.is_ignorable() {
                report.ignored += 1;
                tracing::trace!(node, code = error.code(), error = %error, "metric ignored");
            } else {
                report.rejected += 1;
                // A broken peer can send millions of bad metrics: log the first few of each
                // message, count them all.
                if report.rejected <= LOGGED_PER_MESSAGE {
                    tracing::warn!(node, code = error.code(), error = %error, "metric rejected");
                }
            }
        }
        if report.rejected > LOGGED_PER_MESSAGE {
            tracing::warn!(
                node,
                rejected = report.rejected,
                logged = LOGGED_PER_MESSAGE,
                "more metrics rejected in this message than logged"
            );
        }
        report
    }

    /// Adds converted updates into the window holding `now_ms`; returns those refused. A refused
    /// update leaves every window as it was.
    pub fn apply(&self, now_ms: u64, updates: Vec<Update>) -> Vec<IngestError> {
        let start_ms = now_ms - now_ms % self.config.window_ms;
        let mut errors = Vec::new();
        let mut applied = false;
        {
            let mut rings = self.lock_rings();
            for update in updates {
                match self.apply_one(&mut rings, start_ms, update) {
                    Ok(()) => applied = true,
                    Err(error) => errors.push(error),
                }
            }
        }
        if applied {
            self.changed.send_modify(|generation| *generation += 1);
        }
        errors
    }

    fn apply_one(
        &self,
        rings: &mut BTreeMap<String, VecDeque<ServiceWindow>>,
        start_ms: u64,
        update: Update,
    ) -> Result<(), IngestError> {
        let Update {
            service,
            field,
            value,
            origin: _,
        } = update;
        if !rings.contains_key(&service) && rings.len() >= self.config.max_services {
            return Err(IngestError::TooManyServices {
                service,
                limit: self.config.max_services,
            });
        }
        let ring = rings.entry(service.clone()).or_default();
        let window = match ring.binary_search_by_key(&start_ms, |w| w.start_ms) {
            Ok(i) => &mut ring[i],
            Err(0) if ring.len() >= self.config.windows => {
                return Err(IngestError::StaleWindow { service, start_ms });
            }
            Err(mut i) => {
                if ring.len() >= self.config.windows {
                    ring.pop_front();
                    i -= 1;
                }
                ring.insert(
                    i,
                    ServiceWindow {
                        service: service.clone(),
                        start_ms,
                        end_ms: start_ms.saturating_add(self.config.window_ms),
                        ..ServiceWindow::default()
                    },
                );
                &mut ring[i]
            }
        };
        add(window, field, value, self.config.max_custom)
    }

    /// The services that have windows.
    pub fn services(&self) -> Vec<String> {
        self.lock_rings().keys().cloned().collect()
    }

    /// Copies of `service`'s windows that end after `since_ms`, oldest first.
    pub fn windows(&self, service: &str, since_ms: u64) -> Vec<ServiceWindow> {
        self.lock_rings()
            .get(service)
            .map(|ring| {
                ring.iter()
                    .filter(|w| w.end_ms > since_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The sum of `service`'s windows that overlap `[from_ms, to_ms)`, spanning them; `None`
    /// when there is none. Fails if a histogram's buckets changed between windows.
    pub fn sum(
        &self,
        service: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Option<ServiceWindow>, BoundsMismatch> {
        let rings = self.lock_rings();
        let Some(ring) = rings.get(service) else {
            return Ok(None);
        };
        let mut total: Option<ServiceWindow> = None;
        for window in ring
            .iter()
            .filter(|w| w.start_ms < to_ms && w.end_ms > from_ms)
        {
            match &mut total {
                None => total = Some(window.clone()),
                Some(total) => total.merge(window)?,
            }
        }
        Ok(total)
    }

    fn lock_rings(&self) -> MutexGuard<'_, BTreeMap<String, VecDeque<ServiceWindow>>> {
        // Every change to a window is all or nothing, so a poisoned lock holds no half-update.
        self.rings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Adds one value to one field of a window, all or nothing.
fn add(
    window: &mut ServiceWindow,
    field: Field,
    value: Value,
    max_custom: usize,
) -> Result<(), IngestError> {
    let kind_mismatch = |field: &Field| IngestError::WrongType {
        name: format!("{}:{field:?}", window.service),
        expected: if field.is_histogram() {
            "histogram"
        } else {
            "counter"
        },
        found: if field.is_histogram() {
            "counter"
        } else {
            "histogram"
        },
    };
    match (field, value) {
        (Field::Requests(v), Value::Count(n)) => {
            let w = window.variant_mut(v);
            w.requests = w.requests.saturating_add(n);
        }
        (Field::Errors5xx(v), Value::Count(n)) => {
            let w = window.variant_mut(v);
            w.errors_5xx = w.errors_5xx.saturating_add(n);
        }
        (Field::Resets(v), Value::Count(n)) => {
            let w = window.variant_mut(v);
            w.resets = w.resets.saturating_add(n);
        }
        (Field::Mirror(stat), Value::Count(n)) => {
            let m = &mut window.mirror;
            let slot = match stat {
                MirrorStat::Sent => &mut m.sent,
                MirrorStat::Compared => &mut m.compared,
                MirrorStat::MismatchStatus => &mut m.mismatch_status,
                MirrorStat::MismatchBody => &mut m.mismatch_body,
                MirrorStat::MismatchLatency => &mut m.mismatch_latency,
                MirrorStat::Failed => &mut m.failed,
                MirrorStat::Skipped => &mut m.skipped,
            };
            *slot = slot.saturating_add(n);
        }
        (Field::Latency(v), Value::Histogram(h)) => {
            let service = window.service.clone();
            window
                .variant_mut(v)
                .latency_ms
                .merge(&h)
                .map_err(|source| IngestError::BucketMismatch {
                    name: format!("{service}.{}.latency", v.as_str()),
                    source,
                })?;
        }
        (Field::Custom(v, name), Value::Histogram(h)) => {
            let service = window.service.clone();
            let custom = &mut window.variant_mut(v).custom;
            if !custom.contains_key(&name) && custom.len() >= max_custom {
                return Err(IngestError::TooManyCustomMetrics {
                    metric: name,
                    limit: max_custom,
                });
            }
            let histogram = custom.entry(name.clone()).or_default();
            // A new entry is empty and takes any bounds, so a failed merge never leaves an
            // empty entry behind.
            if let Err(source) = histogram.merge(&h) {
                return Err(IngestError::BucketMismatch {
                    name: format!("{service}.{}.custom.{name}", v.as_str()),
                    source,
                });
            }
        }
        (field, _) => return Err(kind_mismatch(&field)),
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
