//! Why a snapshot was refused.

use super::ResourceType;

/// A snapshot that cannot be built or served, naming the offending resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A resource without a name.
    #[error("a {kind} resource has no name")]
    EmptyName {
        /// Its type.
        kind: ResourceType,
    },
    /// Two resources of one type with the same name.
    #[error("{kind} resource `{name}` is in the snapshot twice")]
    Duplicate {
        /// Their type.
        kind: ResourceType,
        /// Their name.
        name: String,
    },
    /// A resource whose embedded config could not be read.
    #[error("{kind} resource `{name}` cannot be read: {detail}")]
    Undecodable {
        /// Its type.
        kind: ResourceType,
        /// Its name.
        name: String,
        /// What went wrong.
        detail: String,
    },
    /// A resource refers to one the snapshot lacks (a route to a missing cluster, ...).
    #[error(
        "{kind} resource `{name}` refers to {missing_kind} resource `{missing}`, which is not in the snapshot"
    )]
    Dangling {
        /// The referring resource's type.
        kind: ResourceType,
        /// The referring resource's name.
        name: String,
        /// The missing resource's type.
        missing_kind: ResourceType,
        /// The missing resource's name.
        missing: String,
    },
    /// A version that does not grow.
    #[error(
        "snapshot version {version} for node `{node}` is not above its current version {current}"
    )]
    StaleVersion {
        /// The node.
        node: String,
        /// The refused version.
        version: u64,
        /// The node's current version.
        current: u64,
    },
    /// A request about a node the cache does not hold a snapshot for.
    #[error("node `{node}` has no snapshot")]
    UnknownNode {
        /// The node.
        node: String,
    },
}

impl SnapshotError {
    /// A short stable code for metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            SnapshotError::EmptyName { .. } => "empty_name",
            SnapshotError::Duplicate { .. } => "duplicate",
            SnapshotError::Undecodable { .. } => "undecodable",
            SnapshotError::Dangling { .. } => "dangling_reference",
            SnapshotError::StaleVersion { .. } => "stale_version",
            SnapshotError::UnknownNode { .. } => "unknown_node",
        }
    }
}
