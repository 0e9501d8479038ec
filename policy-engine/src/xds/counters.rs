//! Running totals of what the ADS streams did, per resource type: responses pushed, and
//! Envoy's ACKs and NACKs of them. `/metrics` reads them; nothing else depends on them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::ResourceType;

/// Pushes, ACKs and NACKs so far, per resource type, over every node and stream.
#[derive(Debug, Default)]
pub struct XdsCounters {
    pushes: [AtomicU64; 5],
    acks: [AtomicU64; 5],
    nacks: [AtomicU64; 5],
}

/// One type's totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypeCounts {
    /// Responses sent.
    pub pushes: u64,
    /// Responses Envoy acknowledged.
    pub acks: u64,
    /// Responses Envoy rejected.
    pub nacks: u64,
}

impl XdsCounters {
    pub(crate) fn push(&self, kind: ResourceType) {
        self.pushes[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ack(&self, kind: ResourceType) {
        self.acks[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn nack(&self, kind: ResourceType) {
        self.nacks[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The totals of one type.
    pub fn of(&self, kind: ResourceType) -> TypeCounts {
        let i = kind.index();
        TypeCounts {
            pushes: self.pushes[i].load(Ordering::Relaxed),
            acks: self.acks[i].load(Ordering::Relaxed),
            nacks: self.nacks[i].load(Ordering::Relaxed),
        }
    }
}
