//! doppel's xDS control plane: an ADS server (state of the world and delta) over a snapshot cache.
//!
//! The transport knows nothing about policies. Callers build an immutable [`Snapshot`] of
//! listeners, routes, clusters, endpoints and extension configs (ECDS) from envoy-types' protobuf
//! structs, and set it for a node id in the [`SnapshotCache`]. The cache checks it for
//! consistency, stamps it, and wakes every stream of that node. Each stream pushes what changed,
//! in warming order, one response per type in flight, and reports Envoy's ACK or NACK back to
//! the cache, where [`SnapshotCache::status`] shows it. A NACKed type stays on Envoy's last good
//! version; [`SnapshotCache::restore_last_good`] serves that version again.
//!
//! Files: [`bootstrap`] renders `envoy/ads.yaml` for a running engine; [`build`] makes the usual Envoy resources; [`resource`] packs one resource and notes what it refers to; [`snapshot`] holds a
//! node's resources and the consistency check; [`cache`] keeps snapshots and statuses per node
//! (and [`counters`], the pushes, ACKs and NACKs `/metrics` shows);
//! `stream` is the one stream loop; `protocol` its two wire variants; `server` the gRPC service
//! and [`serve`].
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use doppel_engine::xds::build::{eds_cluster, endpoints, weighted_route};
//! use doppel_engine::xds::{Snapshot, SnapshotCache};
//!
//! let cache = SnapshotCache::new();
//! let upstream = SocketAddr::from(([127, 0, 0, 1], 8080));
//! let split = weighted_route("routes", &[("primary", 90), ("shadow", 10)]);
//! let snapshot = |version| {
//!     Snapshot::builder(version)
//!         .cluster(&eds_cluster("primary", Duration::from_secs(1)))
//!         .endpoints(&endpoints("primary", &[upstream]))
//!         .route(&split)
//! };
//! // The route sends traffic to `shadow`, which the snapshot lacks: refused, nothing served.
//! let error = cache.set_snapshot("envoy-1", snapshot(1).build()?).unwrap_err();
//! assert_eq!(error.code(), "dangling_reference");
//! let complete = snapshot(1)
//!     .cluster(&eds_cluster("shadow", Duration::from_secs(1)))
//!     .endpoints(&endpoints("shadow", &[upstream]))
//!     .build()?;
//! cache.set_snapshot("envoy-1", complete)?;
//! assert_eq!(cache.status("envoy-1").and_then(|s| s.version), Some(1));
//! # Ok::<(), doppel_engine::xds::SnapshotError>(())
//! ```
//!
//! Deliberate shortcuts: a resource is packed once and its bytes are copied into each stream's
//! response (no shared pre-encoded response); removed clusters are removed in the same push as
//! the routes that stopped using them (no delayed cleanup).

pub mod bootstrap;
pub mod build;
pub mod cache;
pub mod counters;
mod error;
mod protocol;
pub mod resource;
mod server;
pub mod snapshot;
mod stream;

pub use cache::{Nack, NodeStatus, SnapshotCache, TypeStatus};
pub use counters::{TypeCounts, XdsCounters};
pub use error::SnapshotError;
pub use resource::{Resource, ResourceType};
pub use server::{AdsService, serve, serve_with};
pub use snapshot::{Snapshot, SnapshotBuilder, TypeResources};
