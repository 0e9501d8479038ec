//! Metrics ingestion: a MetricsService gRPC server that any number of Envoys stream their stats
//! into, turned into per (service, variant) time windows.
//!
//! - [`convert`]: the edge. A wire message becomes domain [`Update`]s, or [`IngestError`]s each
//!   with a stable short code. Filter metrics are named by `doppel_filter::names`; Envoy's own
//!   per-cluster stats are mapped to (service, variant) by a [`ClusterRegistry`].
//! - [`store`]: the [`WindowStore`], a ring of windows per service, bounded by services x
//!   windows kept; the analysis loop reads [`WindowStore::windows`] and [`WindowStore::sum`]
//!   and waits on [`WindowStore::subscribe`].
//! - [`server`]: [`serve`], the tonic server on a listener the caller binds; [`body`]: its
//!   reading of a stream's gRPC messages, which holds nothing between them; [`raw`]: their
//!   decoding, which leaves the families doppel does not read undecoded.
//! - [`stream`]: what is kept per open Envoy stream (its name; cumulative counters' last
//!   values when the sinks do not send deltas), dropped when the stream ends.
//! - [`values`]: the checks on a metric's numbers (counts, histogram buckets).
//! - [`registry`] and [`error`]: the cluster map and the error kinds with their counters.
//! - [`wire`]: builders of messages shaped as Envoy sends them (tests, tools); [`fleet`]: a
//!   whole Envoy's flush (hundreds of families) and what the engine must take from it, for the
//!   ingestion load benchmark and its tests.
//!
//! Deliberate choices: windows are bucketed by the engine's clock when a flush arrives, not by
//! the timestamp a peer sends; a bad metric is dropped alone, the rest of its flush is kept.

#[cfg(feature = "runtime")]
pub mod body;
pub mod convert;
pub mod error;
pub mod fleet;
pub mod raw;
pub mod registry;
#[cfg(feature = "runtime")]
pub mod server;
pub mod store;
pub mod stream;
pub mod values;
pub mod wire;

pub use convert::{Field, Flush, MirrorStat, Update, Value};
pub use error::{Counts, IngestError};
pub use registry::ClusterRegistry;
#[cfg(feature = "runtime")]
pub use server::{MAX_MESSAGE_BYTES, WINDOW_BYTES, serve, serve_with, serve_with_access_logs};
pub use store::{IngestReport, StoreConfig, WindowStore};
pub use stream::{CounterMode, Stream};
