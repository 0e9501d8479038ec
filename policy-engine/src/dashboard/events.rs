//! `GET /dashboard/events`: the page's live feed, as server-sent events.
//!
//! - `snapshot`: the whole [`State`], first, and again if the stream fell behind the history's
//!   changes (a slow client skips ahead rather than slowing the analysis).
//! - `point`, `look`: a [`Change`] as the analysis loop records it.
//! - `rollout`: a [`RolloutView`] whenever a rollout's status changed (looked at every
//!   [`ROLLOUT_POLL`]; an operator's command, a rule's decision or a NACK all show).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as Extract;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{Interval, MissedTickBehavior};

use super::Dashboard;
use super::history::Change;
use super::state::{RolloutView, State, rollouts};
use crate::telemetry::ClientGuard;

/// How often rollouts are compared with what the stream last sent.
pub const ROLLOUT_POLL: Duration = Duration::from_millis(500);

/// One named event with a JSON body.
pub fn event(name: &str, data: &impl Serialize) -> Event {
    let json = serde_json::to_string(data)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    Event::default().event(name).data(json)
}

/// The state of one open stream.
struct Feed {
    dashboard: Arc<Dashboard>,
    changes: broadcast::Receiver<Change>,
    poll: Interval,
    /// Per service, the JSON of the rollout view last sent.
    sent: BTreeMap<String, String>,
    queue: VecDeque<Event>,
    snapshot_due: bool,
    _client: ClientGuard,
}

impl Feed {
    fn snapshot(&mut self) -> Event {
        match State::of(&self.dashboard) {
            Ok(state) => {
                self.sent = state
                    .services
                    .iter()
                    .map(|s| (s.service.clone(), json(&s.rollout)))
                    .collect();
                event("snapshot", &state)
            }
            Err(e) => event("error", &serde_json::json!({ "error": e.to_string() })),
        }
    }

    fn rollout_changes(&mut self) {
        for view in rollouts(&self.dashboard.controller) {
            let text = json(&view);
            if self.sent.get(&view.service) != Some(&text) {
                self.sent.insert(view.service.clone(), text);
                self.queue.push_back(event("rollout", &view));
            }
        }
    }

    async fn next(&mut self) -> Event {
        loop {
            if self.snapshot_due {
                self.snapshot_due = false;
                // Changes queued before the snapshot are in it.
                self.changes = self.changes.resubscribe();
                return self.snapshot();
            }
            if let Some(event) = self.queue.pop_front() {
                return event;
            }
            tokio::select! {
                change = self.changes.recv() => match change {
                    Ok(change) => {
                        let name = match &change {
                            Change::Point { .. } => "point",
                            Change::Look { .. } => "look",
                        };
                        return event(name, &change);
                    }
                    Err(RecvError::Lagged(_)) => self.snapshot_due = true,
                    // The history lives as long as the server: nothing more will come.
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                },
                _ = self.poll.tick() => self.rollout_changes(),
            }
        }
    }
}

fn json(view: &RolloutView) -> String {
    serde_json::to_string(view).unwrap_or_default()
}

/// The event stream of one client.
pub fn feed(dashboard: Arc<Dashboard>) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut poll = tokio::time::interval(ROLLOUT_POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let feed = Feed {
        changes: dashboard.history.subscribe(),
        _client: dashboard.telemetry.dashboard_client(),
        dashboard,
        poll,
        sent: BTreeMap::new(),
        queue: VecDeque::new(),
        snapshot_due: true,
    };
    futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await;
        Some((Ok(event), feed))
    })
}

/// The handler.
pub async fn events(
    Extract(dashboard): Extract<Arc<Dashboard>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(feed(dashboard)).keep_alive(KeepAlive::default())
}
