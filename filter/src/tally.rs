//! Counts kept in VM memory between publications, so a request costs no host call for its
//! counters. The filter publishes the non-zero deltas to Envoy on its tick (and when the VM
//! stops); Envoy's counters are sums, so publishing `n` at once equals `n` increments.

use crate::names::{Scope, Variant};

/// Every counter the filter keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Requests a variant answered (including resets).
    RqTotal(Variant),
    /// Answers with a 5xx status.
    Rq5xx(Variant),
    /// Requests with no upstream answer (local reset, timeout, client gone).
    RqReset(Variant),
    /// Copies dispatched to the shadow.
    MirrorSent,
    /// Chosen requests not copied: method not allowed.
    MirrorSkippedMethod,
    /// Chosen requests not copied: body unbounded or too large.
    MirrorSkippedBody,
    /// Chosen requests not copied: too many copies in flight.
    MirrorDroppedInFlight,
    /// Copies that got no answer.
    MirrorFailed,
    /// Copies compared with the primary's answer.
    MirrorCompared,
    /// Compared, status class differed.
    MirrorMismatchStatus,
    /// Compared, body digest differed.
    MirrorMismatchBody,
    /// Compared, shadow slower than the tolerance allows.
    MirrorMismatchLatency,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTERS] = [
        Counter::RqTotal(Variant::Primary),
        Counter::Rq5xx(Variant::Primary),
        Counter::RqReset(Variant::Primary),
        Counter::RqTotal(Variant::Shadow),
        Counter::Rq5xx(Variant::Shadow),
        Counter::RqReset(Variant::Shadow),
        Counter::MirrorSent,
        Counter::MirrorSkippedMethod,
        Counter::MirrorSkippedBody,
        Counter::MirrorDroppedInFlight,
        Counter::MirrorFailed,
        Counter::MirrorCompared,
        Counter::MirrorMismatchStatus,
        Counter::MirrorMismatchBody,
        Counter::MirrorMismatchLatency,
    ];

    /// The position of this counter in [`Counter::ALL`].
    pub fn index(self) -> usize {
        let v = |v: Variant| if v == Variant::Primary { 0 } else { 3 };
        match self {
            Counter::RqTotal(x) => v(x),
            Counter::Rq5xx(x) => v(x) + 1,
            Counter::RqReset(x) => v(x) + 2,
            Counter::MirrorSent => 6,
            Counter::MirrorSkippedMethod => 7,
            Counter::MirrorSkippedBody => 8,
            Counter::MirrorDroppedInFlight => 9,
            Counter::MirrorFailed => 10,
            Counter::MirrorCompared => 11,
            Counter::MirrorMismatchStatus => 12,
            Counter::MirrorMismatchBody => 13,
            Counter::MirrorMismatchLatency => 14,
        }
    }

    /// The scope and stat of its metric name (see [`crate::names`]).
    pub fn stat(self) -> (Scope, &'static str) {
        match self {
            Counter::RqTotal(v) => (Scope::Variant(v), "rq_total"),
            Counter::Rq5xx(v) => (Scope::Variant(v), "rq_5xx"),
            Counter::RqReset(v) => (Scope::Variant(v), "rq_reset"),
            Counter::MirrorSent => (Scope::Mirror, "sent"),
            Counter::MirrorSkippedMethod => (Scope::Mirror, "skipped_method"),
            Counter::MirrorSkippedBody => (Scope::Mirror, "skipped_body"),
            Counter::MirrorDroppedInFlight => (Scope::Mirror, "dropped_in_flight"),
            Counter::MirrorFailed => (Scope::Mirror, "failed"),
            Counter::MirrorCompared => (Scope::Mirror, "compared"),
            Counter::MirrorMismatchStatus => (Scope::Mirror, "mismatch_status"),
            Counter::MirrorMismatchBody => (Scope::Mirror, "mismatch_body"),
            Counter::MirrorMismatchLatency => (Scope::Mirror, "mismatch_latency"),
        }
    }
}

/// How many counters there are.
pub const COUNTERS: usize = 15;

/// Counts not yet published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pending: [u64; COUNTERS],
    dirty: bool,
}

impl Tally {
    /// Adds one to `counter`.
    pub fn add(&mut self, counter: Counter) {
        let slot = &mut self.pending[counter.index()];
        *slot = slot.saturating_add(1);
        self.dirty = true;
    }

    /// Whether anything is waiting to be published.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Takes the non-zero counts, leaving zeros behind.
    pub fn drain(&mut self) -> impl Iterator<Item = (Counter, u64)> + use<> {
        let taken = std::mem::take(&mut self.pending);
        self.dirty = false;
        Counter::ALL.into_iter().zip(taken).filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_the_list() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?}");
        }
    }

    #[test]
    fn drain_yields_only_nonzero_counts_once() {
        let mut t = Tally::default();
        assert!(!t.is_dirty());
        for _ in 0..3 {
            t.add(Counter::RqTotal(Variant::Shadow));
        }
        t.add(Counter::MirrorSent);
        assert!(t.is_dirty());
        let got: Vec<_> = t.drain().collect();
        assert_eq!(
            got,
            [
                (Counter::RqTotal(Variant::Shadow), 3),
                (Counter::MirrorSent, 1)
            ]
        );
        assert!(!t.is_dirty());
        assert_eq!(t.drain().count(), 0);
    }
}
