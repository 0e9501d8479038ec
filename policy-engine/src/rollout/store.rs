//! The embedded store (redb): rollout states, the decision log, and per node the last snapshot's
//! version and the inputs that rebuild it. One write transaction per transition, committed
//! before the snapshot is served: after a crash the engine resumes from exactly what it served.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::RolloutError;
use super::machine::{Input, Rollout};
use super::render::NodeInputs;

const ROLLOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rollouts");
const DECISIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("decisions");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");

/// One line of the decision log: an input, whether it was accepted, and what it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the service's log, from 1.
    pub seq: u64,
    /// The input.
    pub input: Input,
    /// Whether it changed the rollout.
    pub changed: bool,
    /// What happened, or why it was refused.
    pub note: String,
    /// The phase after it.
    pub phase: String,
    /// The step after it (1-based), if shadowing or paused.
    pub step: Option<usize>,
}

/// The last snapshot served to a node: its version and its inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The snapshot version.
    pub version: u64,
    /// What it was built from.
    pub inputs: NodeInputs,
}

/// One transition to make durable.
#[derive(Debug)]
pub struct Change<'a> {
    /// The rollout after it.
    pub rollout: &'a Rollout,
    /// The log line (its `seq` is assigned here).
    pub entry: LogEntry,
    /// The nodes whose snapshot changes, with their new records.
    pub nodes: Vec<(&'a str, &'a NodeRecord)>,
}

/// The rollout store.
pub struct Store {
    db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn store_error(what: &str, error: impl std::fmt::Display) -> RolloutError {
    RolloutError::Store(format!("{what}: {error}"))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, RolloutError> {
    serde_json::from_slice(bytes).map_err(|e| store_error(what, e))
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, RolloutError> {
    serde_json::to_vec(value).map_err(|e| store_error(what, e))
}

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, RolloutError> {
        let db = Database::create(path)
            .map_err(|e| store_error(&format!("opening {}", path.display()), e))?;
        let txn = db.begin_write().map_err(|e| store_error("begin", e))?;
        {
            txn.open_table(ROLLOUTS)
                .map_err(|e| store_error("rollouts", e))?;
            txn.open_table(DECISIONS)
                .map_err(|e| store_error("decisions", e))?;
            txn.open_table(NODES).map_err(|e| store_error("nodes", e))?;
        }
        txn.commit().map_err(|e| store_error("commit", e))?;
        Ok(Store { db })
    }

    /// Every stored rollout, by service.
    pub fn rollouts(&self) -> Result<BTreeMap<String, Rollout>, RolloutError> {
        self.read_all(ROLLOUTS, "rollout")
    }

    /// Every node's last snapshot record, by node id.
    pub fn nodes(&self) -> Result<BTreeMap<String, NodeRecord>, RolloutError> {
        self.read_all(NODES, "node record")
    }

    fn read_all<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        what: &str,
    ) -> Result<BTreeMap<String, T>, RolloutError> {
        let txn = self.db.begin_read().map_err(|e| store_error("begin", e))?;
        let table = txn.open_table(table).map_err(|e| store_error(what, e))?;
        let mut out = BTreeMap::new();
        for row in table.iter().map_err(|e| store_error(what, e))? {
            let (key, value) = row.map_err(|e| store_error(what, e))?;
            let key = key.value().to_owned();
            let value = decode(&format!("{what} {key}"), value.value())?;
            out.insert(key, value);
        }
        Ok(out)
    }

    /// `service`'s decision log, oldest first; at most the last `limit` entries.
    pub fn decisions(&self, service: &str, limit: usize) -> Result<Vec<LogEntry>, RolloutError> {
        let txn = self.db.begin_read().map_err(|e| store_error("begin", e))?;
        let table = txn
            .open_table(DECISIONS)
            .map_err(|e| store_error("decisions", e))?;
        let range = table
            .range((service, 0)..=(service, u64::MAX))
            .map_err(|e| store_error("decisions", e))?;
        let mut out = Vec::new();
        for row in range.rev().take(limit) {
            let (_, value) = row.map_err(|e| store_error("decisions", e))?;
            out.push(decode("decision", value.value())?);
        }
        out.reverse();
        Ok(out)
    }

    /// Makes `change` durable in one transaction; returns the log entry's sequence number.
    pub fn commit(&self, change: Change<'_>) -> Result<u64, RolloutError> {
        let service = change.rollout.service.as_str();
        let txn = self.db.begin_write().map_err(|e| store_error("begin", e))?;
        let seq;
        {
            let mut decisions = txn
                .open_table(DECISIONS)
                .map_err(|e| store_error("decisions", e))?;
            let last = decisions
                .range((service, 0)..=(service, u64::MAX))
                .map_err(|e| store_error("decisions", e))?
                .next_back()
                .transpose()
                .map_err(|e| store_error("decisions", e))?
                .map_or(0, |(key, _)| key.value().1);
            seq = last + 1;
            let entry = LogEntry {
                seq,
                ..change.entry
            };
            decisions
                .insert((service, seq), encode("decision", &entry)?.as_slice())
                .map_err(|e| store_error("decisions", e))?;
            if entry.changed {
                let mut rollouts = txn
                    .open_table(ROLLOUTS)
                    .map_err(|e| store_error("rollouts", e))?;
                rollouts
                    .insert(service, encode("rollout", change.rollout)?.as_slice())
                    .map_err(|e| store_error("rollouts", e))?;
            }
            let mut nodes = txn.open_table(NODES).map_err(|e| store_error("nodes", e))?;
            for (node, record) in &change.nodes {
                nodes
                    .insert(*node, encode("node record", *record)?.as_slice())
                    .map_err(|e| store_error("nodes", e))?;
            }
        }
        txn.commit().map_err(|e| store_error("commit", e))?;
        Ok(seq)
    }

    /// Stores one node's record (a snapshot served outside a transition: the first one).
    pub fn put_node(&self, node: &str, record: &NodeRecord) -> Result<(), RolloutError> {
        let txn = self.db.begin_write().map_err(|e| store_error("begin", e))?;
        {
            let mut table = txn.open_table(NODES).map_err(|e| store_error("nodes", e))?;
            table
                .insert(node, encode("node record", record)?.as_slice())
                .map_err(|e| store_error("nodes", e))?;
        }
        txn.commit().map_err(|e| store_error("commit", e))
    }

    /// Stores `rollout` and node records without a log line (a new service's first state).
    pub fn put(
        &self,
        rollout: &Rollout,
        nodes: &[(&str, &NodeRecord)],
    ) -> Result<(), RolloutError> {
        let txn = self.db.begin_write().map_err(|e| store_error("begin", e))?;
        {
            let mut rollouts = txn
                .open_table(ROLLOUTS)
                .map_err(|e| store_error("rollouts", e))?;
            rollouts
                .insert(
                    rollout.service.as_str(),
                    encode("rollout", rollout)?.as_slice(),
                )
                .map_err(|e| store_error("rollouts", e))?;
            let mut table = txn.open_table(NODES).map_err(|e| store_error("nodes", e))?;
            for (node, record) in nodes {
                table
                    .insert(*node, encode("node record", *record)?.as_slice())
                    .map_err(|e| store_error("nodes", e))?;
            }
        }
        txn.commit().map_err(|e| store_error("commit", e))
    }
}
