//! The snapshot cache: one current snapshot per node, and what each node's Envoy made of it.
//!
//! Setting a snapshot checks it, stamps it, and wakes every stream of that node (a `watch`
//! channel: each stream only clones an `Arc`). Streams report back what they sent and what Envoy
//! acknowledged or rejected; that record is [`SnapshotCache::status`]. The cache knows nothing
//! about policies.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::counters::XdsCounters;
use super::{ResourceType, Snapshot, SnapshotError, TypeResources};

/// What one node's Envoy did with the latest pushes of one resource type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// The last version sent on any stream of the node.
    pub sent: Option<u64>,
    /// The last version Envoy acknowledged (applied).
    pub acked: Option<u64>,
    /// The last version Envoy rejected, with its reason.
    pub nacked: Option<Nack>,
}

impl TypeStatus {
    /// Whether the latest answer from Envoy for this type is a rejection: Envoy then runs the
    /// last acknowledged version.
    pub fn is_rejecting(&self) -> bool {
        match (&self.nacked, self.acked) {
            (Some(nack), Some(acked)) => nack.version > acked,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// A rejected version and Envoy's `error_detail` message for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The rejected version.
    pub version: u64,
    /// Envoy's reason.
    pub error: String,
}

/// A node's state: the snapshot set for it, its open streams, and per type what Envoy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// The version of the snapshot currently set, if any.
    pub version: Option<u64>,
    /// Open ADS streams from this node.
    pub streams: usize,
    /// Per type, what was sent, acknowledged and rejected.
    pub types: BTreeMap<ResourceType, TypeStatus>,
}

impl NodeStatus {
    /// The status of one type (empty if nothing was sent yet).
    pub fn of(&self, kind: ResourceType) -> TypeStatus {
        self.types.get(&kind).cloned().unwrap_or_default()
    }
}

struct NodeEntry {
    snapshot: watch::Sender<Option<Arc<Snapshot>>>,
    status: watch::Sender<NodeStatus>,
    last_good: [Option<Arc<TypeResources>>; 5],
}

impl NodeEntry {
    fn new() -> NodeEntry {
        NodeEntry {
            snapshot: watch::Sender::new(None),
            status: watch::Sender::new(NodeStatus::default()),
            last_good: Default::default(),
        }
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.borrow().clone()
    }

    fn install(&self, node: &str, snapshot: Snapshot) -> Result<u64, SnapshotError> {
        snapshot.check()?;
        let current = self.current();
        if let Some(current) = &current
            && snapshot.version() <= current.version()
        {
            return Err(SnapshotError::StaleVersion {
                node: node.to_owned(),
                version: snapshot.version(),
                current: current.version(),
            });
        }
        let snapshot = snapshot.sharing_unchanged(current.as_deref());
        let version = snapshot.version();
        self.snapshot.send_replace(Some(Arc::new(snapshot)));
        self.status
            .send_modify(|status| status.version = Some(version));
        tracing::info!(node, version, "xds snapshot set");
        Ok(version)
    }
}

/// Snapshots per node id, and the ACK/NACK record of every node.
#[derive(Default)]
pub struct SnapshotCache {
    nodes: Mutex<HashMap<String, NodeEntry>>,
    counters: XdsCounters,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("nodes", &self.nodes().len())
            .finish()
    }
}

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> SnapshotCache {
        SnapshotCache::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, NodeEntry>> {
        // A panic while holding the lock cannot leave a half-made entry: keep serving.
        self.nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_entry<T>(&self, node: &str, f: impl FnOnce(&mut NodeEntry) -> T) -> T {
        let mut nodes = self.lock();
        let entry = nodes.entry(node.to_owned()).or_insert_with(NodeEntry::new);
        f(entry)
    }

    /// Sets `node`'s snapshot after checking it ([`Snapshot::check`]) and that its version is
    /// above the current one, and wakes every stream of that node. Types whose content did not
    /// change keep their version and are not resent.
    pub fn set_snapshot(&self, node: &str, snapshot: Snapshot) -> Result<(), SnapshotError> {
        self.with_entry(node, |entry| entry.install(node, snapshot))
            .map(|_| ())
            .inspect_err(|error| {
                tracing::warn!(node, code = error.code(), error = %error, "xds snapshot refused");
            })
    }

    /// Pushes, ACKs and NACKs so far, per resource type.
    pub fn counters(&self) -> &XdsCounters {
        &self.counters
    }

    /// The snapshot currently set for `node`.
    pub fn snapshot(&self, node: &str) -> Option<Arc<Snapshot>> {
        self.lock().get(node).and_then(NodeEntry::current)
    }

    /// The next version to use for `node`: one above its current snapshot's, or 1.
    pub fn next_version(&self, node: &str) -> u64 {
        self.snapshot(node).map_or(1, |s| s.version() + 1)
    }

    /// The node ids the cache knows (with a snapshot or a stream).
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.lock().keys().cloned().collect();
        nodes.sort();
        nodes
    }

    /// What `node`'s Envoy did with each type: last sent, acknowledged and rejected versions.
    pub fn status(&self, node: &str) -> Option<NodeStatus> {
        self.lock()
            .get(node)
            .map(|entry| entry.status.borrow().clone())
    }

    /// A receiver that sees every change of `node`'s status (for rollouts reacting to NACKs).
    pub fn watch_status(&self, node: &str) -> watch::Receiver<NodeStatus> {
        self.with_entry(node, |entry| entry.status.subscribe())
    }

    /// Waits until `node`'s status satisfies `done`, and returns that status.
    pub async fn wait_status(
        &self,
        node: &str,
        mut done: impl FnMut(&NodeStatus) -> bool,
    ) -> NodeStatus {
        let mut status = self.watch_status(node);
        let result = status.wait_for(|s| done(s)).await.map(|s| s.clone());
        // The sender lives in the cache, which `self` keeps alive.
        result.unwrap_or_else(|_| status.borrow().clone())
    }

    /// Serves again, under a new version, the last acknowledged content of every type `node`'s
    /// Envoy is currently rejecting; types never acknowledged stay as they are (with nothing
    /// rejected, only the version moves and nothing is pushed). Returns the new version.
    pub fn restore_last_good(&self, node: &str) -> Result<u64, SnapshotError> {
        self.with_entry(node, |entry| {
            let current = entry.current().ok_or_else(|| SnapshotError::UnknownNode {
                node: node.to_owned(),
            })?;
            let status = entry.status.borrow().clone();
            let mut restored = current.renumbered(current.version() + 1);
            for kind in ResourceType::ALL {
                if let (true, Some(good)) = (
                    status.of(kind).is_rejecting(),
                    &entry.last_good[kind.index()],
                ) {
                    restored = restored.with_type(kind, good);
                }
            }
            entry.install(node, restored)
        })
    }

    /// A stream of `node` opened: the receiver of its snapshots, and a guard counting it.
    pub(crate) fn open_stream(self: &Arc<Self>, node: &str) -> StreamGuard {
        let snapshots = self.with_entry(node, |entry| {
            entry.status.send_modify(|status| status.streams += 1);
            entry.snapshot.subscribe()
        });
        StreamGuard {
            cache: Arc::clone(self),
            node: node.to_owned(),
            snapshots,
        }
    }

    pub(crate) fn record_sent(&self, node: &str, kind: ResourceType, version: u64) {
        self.counters.push(kind);
        self.with_entry(node, |entry| {
            entry.status.send_modify(|status| {
                status.types.entry(kind).or_default().sent = Some(version);
            });
        });
    }

    pub(crate) fn record_ack(
        &self,
        node: &str,
        kind: ResourceType,
        version: u64,
        resources: &Arc<TypeResources>,
    ) {
        self.counters.ack(kind);
        self.with_entry(node, |entry| {
            entry.last_good[kind.index()] = Some(Arc::clone(resources));
            entry.status.send_modify(|status| {
                status.types.entry(kind).or_default().acked = Some(version);
            });
        });
        tracing::debug!(
            node,
            type_code = kind.code(),
            version,
            "xds update acknowledged"
        );
    }

    pub(crate) fn record_nack(&self, node: &str, kind: ResourceType, version: u64, error: &str) {
        self.counters.nack(kind);
        self.with_entry(node, |entry| {
            entry.status.send_modify(|status| {
                status.types.entry(kind).or_default().nacked = Some(Nack {
                    version,
                    error: error.to_owned(),
                });
            });
        });
        tracing::warn!(
            node,
            type_code = kind.code(),
            version,
            error,
            "envoy rejected xds update (NACK); it keeps its last good config"
        );
    }
}

/// One open stream's view of its node: the snapshot receiver; dropping it closes the stream.
pub(crate) struct StreamGuard {
    cache: Arc<SnapshotCache>,
    node: String,
    /// Every snapshot set for the node.
    pub snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.cache.with_entry(&self.node, |entry| {
            entry
                .status
                .send_modify(|status| status.streams = status.streams.saturating_sub(1));
        });
    }
}
