//! What the dashboard draws, kept in memory: per service, a bounded ring of points (one per
//! complete window of traffic: rate, errors, latency quantiles, mirror mismatches, primary
//! against shadow) and a bounded ring of looks (the analysis's evaluations, with every rule's
//! values, p-value and state). Each new point or look is also sent to the event streams.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::analysis::Evaluation;
use crate::context::{LatencyContext, MirrorContext};
use crate::metrics::{ServiceWindow, VariantWindow};

/// Points and looks kept per service by default: an hour of 10 s windows.
pub const DEFAULT_CAPACITY: usize = 360;

/// Changes queued per event stream before a slow one skips ahead (and gets a fresh snapshot).
const EVENT_BUFFER: usize = 256;

/// One variant over one window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VariantPoint {
    /// Requests answered.
    pub requests: u64,
    /// 5xx answers plus resets.
    pub errors: u64,
    /// Requests per second over the window.
    pub rps: f64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Latency quantiles in milliseconds; `None` without latency data.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// The mirror comparison over one window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MirrorPoint {
    /// Copies sent.
    pub sent: u64,
    /// Copies compared.
    pub compared: u64,
    /// Compared copies that differed (status, body or latency).
    pub mismatches: u64,
    /// `mismatches / compared` (0 when nothing was compared).
    pub mismatch_rate: f64,
}

/// One complete window of one service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Window start, Unix milliseconds.
    pub start_ms: u64,
    /// Window end (exclusive), Unix milliseconds.
    pub end_ms: u64,
    /// The primary.
    pub primary: VariantPoint,
    /// The shadow.
    pub shadow: VariantPoint,
    /// The mirror comparison.
    pub mirror: MirrorPoint,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl VariantPoint {
    fn of(w: &VariantWindow, seconds: f64) -> VariantPoint {
        let errors = w.errors_5xx.saturating_add(w.resets).min(w.requests);
        let latency = LatencyContext::of(&w.latency_ms);
        let has = latency.count > 0;
        VariantPoint {
            requests: w.requests,
            errors,
            rps: if seconds > 0.0 {
                w.requests as f64 / seconds
            } else {
                0.0
            },
            error_rate: ratio(errors, w.requests),
            p50: has.then_some(latency.p50),
            p95: has.then_some(latency.p95),
            p99: has.then_some(latency.p99),
        }
    }
}

impl Point {
    /// The point of one window.
    pub fn of(window: &ServiceWindow) -> Point {
        let seconds = window.end_ms.saturating_sub(window.start_ms) as f64 / 1000.0;
        let mirror = MirrorContext::of(&window.mirror);
        let mismatches = u64::try_from(mirror.mismatches.total).unwrap_or(0);
        Point {
            start_ms: window.start_ms,
            end_ms: window.end_ms,
            primary: VariantPoint::of(&window.primary, seconds),
            shadow: VariantPoint::of(&window.shadow, seconds),
            mirror: MirrorPoint {
                sent: window.mirror.sent,
                compared: window.mirror.compared,
                mismatches,
                mismatch_rate: mirror.mismatch_rate,
            },
        }
    }
}

/// A change to some service's history, as the event streams send it.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A new point.
    Point {
        /// The service.
        service: String,
        /// The point.
        point: Point,
    },
    /// A new look.
    Look {
        /// The service.
        service: String,
        /// The evaluation.
        look: Evaluation,
    },
}

/// One service's history, oldest first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceHistory {
    /// One per complete window.
    pub points: Vec<Point>,
    /// One per analysis look.
    pub looks: Vec<Evaluation>,
}

#[derive(Debug, Default)]
struct Ring {
    points: VecDeque<Point>,
    looks: VecDeque<Evaluation>,
}

/// Every service's history, shared by the analysis loop (which records) and the dashboard.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    rings: Mutex<BTreeMap<String, Ring>>,
    changes: broadcast::Sender<Change>,
}

impl Default for History {
    fn default() -> History {
        History::new(DEFAULT_CAPACITY)
    }
}

fn push_bounded<T>(ring: &mut VecDeque<T>, item: T, capacity: usize) {
    while ring.len() >= capacity {
        ring.pop_front();
    }
    ring.push_back(item);
}

impl History {
    /// An empty history keeping `capacity` points and looks per service (at least 1).
    pub fn new(capacity: usize) -> History {
        History {
            capacity: capacity.max(1),
            rings: Mutex::new(BTreeMap::new()),
            changes: broadcast::Sender::new(EVENT_BUFFER),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Ring>> {
        // Each change is one push: a panic cannot leave a ring half-changed.
        self.rings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a complete window of `window.service`. A window that does not end after the
    /// last one recorded is ignored (the loop may read a window twice).
    pub fn record_window(&self, window: &ServiceWindow) {
        let point = Point::of(window);
        {
            let mut rings = self.lock();
            let ring = rings.entry(window.service.clone()).or_default();
            if ring.points.back().is_some_and(|p| p.end_ms >= point.end_ms) {
                return;
            }
            push_bounded(&mut ring.points, point.clone(), self.capacity);
        }
        // Nobody listening is fine.
        let _ = self.changes.send(Change::Point {
            service: window.service.clone(),
            point,
        });
    }

    /// Records one analysis look of `service`.
    pub fn record_look(&self, service: &str, evaluation: &Evaluation) {
        {
            let mut rings = self.lock();
            let ring = rings.entry(service.to_owned()).or_default();
            push_bounded(&mut ring.looks, evaluation.clone(), self.capacity);
        }
        let _ = self.changes.send(Change::Look {
            service: service.to_owned(),
            look: evaluation.clone(),
        });
    }

    /// A copy of `service`'s history (empty if nothing was recorded).
    pub fn service(&self, service: &str) -> ServiceHistory {
        self.lock()
            .get(service)
            .map(|ring| ServiceHistory {
                points: ring.points.iter().cloned().collect(),
                looks: ring.looks.iter().cloned().collect(),
            })
            .unwrap_or_default()
    }

    /// The end of the last window recorded for `service`.
    pub fn last_window_end(&self, service: &str) -> Option<u64> {
        self.lock()
            .get(service)
            .and_then(|ring| ring.points.back().map(|p| p.end_ms))
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Outcome;
    use crate::metrics::Histogram;

    fn window(service: &str, start_ms: u64, requests: u64, errors: u64) -> ServiceWindow {
        let mut w = ServiceWindow {
            service: service.into(),
            start_ms,
            end_ms: start_ms + 2_000,
            ..ServiceWindow::default()
        };
        w.primary.requests = requests;
        w.shadow.requests = requests;
        w.shadow.errors_5xx = errors;
        w.shadow.latency_ms = Histogram {
            bounds: vec![10.0, 100.0],
            counts: vec![0, requests, 0],
            sum: 50.0 * requests as f64,
        };
        w.mirror.compared = 10;
        w.mirror.mismatch_body = 2;
        w.mirror.mismatch_status = 1;
        w
    }

    fn look(at_ms: u64) -> Evaluation {
        Evaluation {
            at_ms,
            step: 1,
            outcome: Outcome::Inconclusive {
                reason: "few".into(),
                holding: Vec::new(),
            },
            decisions: Vec::new(),
            synthetic: None,
            resources: None,
            rules: Vec::new(),
        }
    }

    #[test]
    fn a_point_has_rates_quantiles_and_mismatches_and_no_latency_without_data() {
        let p = Point::of(&window("a", 0, 100, 20));
        assert_eq!(p.shadow.rps, 50.0, "100 requests over 2 s");
        assert_eq!(p.shadow.error_rate, 0.2);
        let p50 = p.shadow.p50.expect("shadow latency");
        assert!(p50 > 10.0 && p50 <= 100.0, "{p50}");
        assert_eq!(p.primary.p50, None, "the primary reported no latency");
        assert_eq!((p.mirror.mismatches, p.mirror.mismatch_rate), (3, 0.3));
    }

    #[test]
    fn history_is_bounded_per_service_and_drops_the_oldest() {
        let history = History::new(3);
        for i in 0..5 {
            history.record_window(&window("a", i * 2_000, 10, 0));
            history.record_look("a", &look(i * 2_000));
        }
        history.record_window(&window("b", 0, 1, 0));
        let a = history.service("a");
        let starts: Vec<u64> = a.points.iter().map(|p| p.start_ms).collect();
        assert_eq!(starts, [4_000, 6_000, 8_000]);
        let looks: Vec<u64> = a.looks.iter().map(|l| l.at_ms).collect();
        assert_eq!(looks, [4_000, 6_000, 8_000]);
        assert_eq!(history.service("b").points.len(), 1);
        assert!(history.service("nobody").points.is_empty());
        assert_eq!(history.last_window_end("a"), Some(10_000));
    }

    #[test]
    fn a_window_read_twice_is_recorded_once() {
        let history = History::new(10);
        let mut changes = history.subscribe();
        history.record_window(&window("a", 0, 10, 0));
        history.record_window(&window("a", 0, 10, 0));
        history.record_window(&window("a", 2_000, 10, 0));
        assert_eq!(history.service("a").points.len(), 2);
        let mut sent = 0;
        while let Ok(change) = changes.try_recv() {
            assert!(matches!(change, Change::Point { ref service, .. } if service == "a"));
            sent += 1;
        }
        assert_eq!(sent, 2, "no event for the duplicate");
    }

    #[test]
    fn changes_serialize_with_their_kind() {
        let history = History::new(10);
        let mut changes = history.subscribe();
        history.record_look("a", &look(7));
        let change = changes.try_recv().expect("a change");
        let json = serde_json::to_value(&change).expect("json");
        assert_eq!(json["kind"], "look");
        assert_eq!(json["service"], "a");
        assert_eq!(json["look"]["at_ms"], 7);
        assert_eq!(json["look"]["outcome"]["state"], "inconclusive");
    }
}
