//! What the engine keeps per Envoy stream while it is open, and drops when it ends: the
//! sender's name for logs and, when the sinks report cumulative counters, the last value of
//! each counter, to turn them into deltas.
//!
//! doppel's sink config reports counters as deltas (`report_counters_as_deltas: true`), which
//! needs no state. Envoy's default is cumulative; [`CounterMode::Cumulative`] reads that too.
//! Histograms need no state in either mode: the sink always sends the last interval's.

use std::collections::HashMap;

use super::convert::{Update, Value};
use super::error::IngestError;

/// The most counters whose last value one stream keeps (cumulative mode).
pub const MAX_COUNTERS_PER_STREAM: usize = 65_536;

/// How the Envoys' sinks report counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CounterMode {
    /// The change since the last flush (`report_counters_as_deltas: true`, doppel's config).
    #[default]
    Deltas,
    /// The value since Envoy started (Envoy's default). Values in a stream's first message are
    /// baselines and add nothing (that history is not the current window's); a counter first
    /// seen later counts in full (Envoy sends only counters used at least once, so it was at
    /// zero before); a value below the last one means Envoy restarted, and counts in full.
    Cumulative,
}

/// One open MetricsService stream.
#[derive(Debug)]
pub struct Stream {
    node: String,
    mode: CounterMode,
    last: HashMap<String, u64>,
    messages: u64,
}

impl Stream {
    /// A stream from `node` (the peer's address until its identifier arrives).
    pub fn new(node: impl Into<String>, mode: CounterMode) -> Self {
        Stream {
            node: node.into(),
            mode,
            last: HashMap::new(),
            messages: 0,
        }
    }

    /// The sender's name, for logs.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Names the sender.
    pub fn set_node(&mut self, node: impl Into<String>) {
        self.node = node.into();
    }

    /// Messages seen on this stream so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Counters whose last value is kept.
    pub fn baselines(&self) -> usize {
        self.last.len()
    }

    /// Turns one message's counter updates into deltas: as they are in [`CounterMode::Deltas`],
    /// against the last value of the same counter in [`CounterMode::Cumulative`]. Returns the
    /// updates to apply and those refused.
    pub fn to_deltas(&mut self, updates: Vec<Update>) -> (Vec<Update>, Vec<IngestError>) {
        self.messages += 1;
        if self.mode == CounterMode::Deltas {
            return (updates, Vec::new());
        }
        let first_message = self.messages == 1;
        let mut kept = Vec::with_capacity(updates.len());
        let mut refused = Vec::new();
        for mut update in updates {
            let Value::Count(value) = update.value else {
                kept.push(update);
                continue;
            };
            if !self.last.contains_key(&update.origin) && self.last.len() >= MAX_COUNTERS_PER_STREAM
            {
                refused.push(IngestError::TooManyCounters {
                    origin: update.origin,
                    limit: MAX_COUNTERS_PER_STREAM,
                });
                continue;
            }
            let delta = match self.last.insert(update.origin.clone(), value) {
                None if first_message => 0,
                None => value,
                Some(last) if value >= last => value - last,
                // Counters only go down when Envoy restarted: all of `value` is new.
                Some(_) => value,
            };
            update.value = Value::Count(delta);
            kept.push(update);
        }
        (kept, refused)
    }
}
