//! The controller: every service's rollout, the store, and the snapshot cache. An input goes
//! through the machine, the new state and snapshot inputs are committed to the store, and only
//! then is the snapshot set (served). On open, each node gets back the exact snapshot (same
//! version, same inputs) it was last served.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use super::RolloutError;
use super::filter_config::{FilterKind, filter_config};
use super::machine::{Input, PlanStep, Rollout};
use super::render::{NodeInputs, ServiceInputs, render};
use super::store::{Change, LogEntry, NodeRecord, Store};
use super::traffic::{Steering, TrafficState};
use crate::policy::Policy;
use crate::xds::{NodeStatus, SnapshotCache};

/// The variant header when the policy does not name one (docs/filter-config.md).
const DEFAULT_VARIANT_HEADER: &str = "x-doppel-variant";

/// One service under the controller: its policy and where its traffic goes (full ADS).
#[derive(Clone, Debug)]
pub struct ServiceSetup {
    /// The policy.
    pub policy: Policy,
    /// Where its listener binds (full ADS).
    pub listener: Option<SocketAddr>,
    /// Endpoints per cluster name (full ADS).
    pub endpoints: BTreeMap<String, Vec<SocketAddr>>,
}

/// What the controller steers.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Full ADS or filter-only.
    pub steering: Steering,
    /// How the filter config is packed.
    pub filter: FilterKind,
    /// The Envoy node ids served.
    pub nodes: Vec<String>,
    /// The services, by name.
    pub services: BTreeMap<String, ServiceSetup>,
    /// Full ADS: the bootstrap cluster Envoy streams access logs to (`None`: no access log).
    pub access_log: Option<String>,
}

/// One rollout as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutStatus {
    /// The rollout (phase, plan, version).
    pub rollout: Rollout,
    /// The current step, 1-based.
    pub step: Option<usize>,
    /// The traffic Envoy is asked for.
    pub traffic: TrafficState,
    /// Whether requests are mirrored.
    pub mirroring: bool,
    /// What each node's Envoy did with the snapshots.
    pub nodes: Vec<NodeReport>,
    /// The last decisions, oldest first.
    pub decisions: Vec<LogEntry>,
}

/// One node's xDS state for `status`.
#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    /// The node id.
    pub node: String,
    /// The snapshot version set for it.
    pub version: Option<u64>,
    /// Open ADS streams.
    pub streams: usize,
    /// Types Envoy currently rejects: type code, rejected version, last good version, reason.
    pub rejected: Vec<Rejection>,
}

/// A rejected (NACKed) push Envoy is not running.
#[derive(Clone, Debug, Serialize)]
pub struct Rejection {
    /// `cds`, `eds`, `lds`, `rds` or `ecds`.
    pub kind: &'static str,
    /// The rejected version.
    pub version: u64,
    /// The version Envoy still runs, if any.
    pub running: Option<u64>,
    /// Envoy's `error_detail`.
    pub error: String,
}

fn report(node: &str, status: Option<NodeStatus>) -> NodeReport {
    let status = status.unwrap_or_default();
    let rejected = status
        .types
        .iter()
        .filter(|(_, t)| t.is_rejecting())
        .filter_map(|(kind, t)| {
            t.nacked.as_ref().map(|nack| Rejection {
                kind: kind.code(),
                version: nack.version,
                running: t.acked,
                error: nack.error.clone(),
            })
        })
        .collect();
    NodeReport {
        node: node.to_owned(),
        version: status.version,
        streams: status.streams,
        rejected,
    }
}

/// Every rollout, its store and the cache it serves through.
pub struct Controller {
    setup: Setup,
    rollouts: BTreeMap<String, Rollout>,
    versions: HashMap<String, u64>,
    /// How many times each service's policy was replaced while running (0: as loaded).
    generations: HashMap<String, u64>,
    store: Store,
    cache: Arc<SnapshotCache>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("rollouts", &self.rollouts)
            .finish()
    }
}

impl Controller {
    /// Loads the stored rollouts (new ones start pending), serves every node its stored
    /// snapshot again under its stored version, then pushes what the current setup asks for
    /// if that differs.
    pub fn open(
        setup: Setup,
        store: Store,
        cache: Arc<SnapshotCache>,
    ) -> Result<Controller, RolloutError> {
        let mut stored = store.rollouts()?;
        let mut rollouts = BTreeMap::new();
        for (name, service) in &setup.services {
            let policy = &service.policy;
            let fresh = || {
                let initial = PlanStep {
                    weight: policy.traffic.percent.get(),
                    hold_ms: 0,
                };
                Rollout::new(&policy.service, &policy.steps, initial)
            };
            let rollout = match stored.remove(name) {
                // The plan comes from the stored state: a running rollout keeps its steps.
                Some(rollout) => rollout,
                None => {
                    let rollout = fresh();
                    store.put(&rollout, &[])?;
                    rollout
                }
            };
            rollouts.insert(name.clone(), rollout);
        }
        let mut controller = Controller {
            setup,
            rollouts,
            versions: HashMap::new(),
            generations: HashMap::new(),
            store,
            cache,
        };
        let records = controller.store.nodes()?;
        for node in controller.setup.nodes.clone() {
            if let Some(record) = records.get(&node) {
                let snapshot = render(&record.inputs, record.version)?;
                controller.cache.set_snapshot(&node, snapshot)?;
                controller.versions.insert(node.clone(), record.version);
                tracing::info!(node, version = record.version, "restored the last snapshot");
            }
            let inputs = controller.inputs();
            if records.get(&node).map(|r| &r.inputs) != Some(&inputs) {
                let version = controller.versions.get(&node).map_or(1, |v| v + 1);
                let snapshot = render(&inputs, version)?;
                let record = NodeRecord { version, inputs };
                controller.store.put_node(&node, &record)?;
                controller.cache.set_snapshot(&node, snapshot)?;
                controller.versions.insert(node, version);
            }
        }
        Ok(controller)
    }

    /// The services under control.
    pub fn services(&self) -> Vec<String> {
        self.rollouts.keys().cloned().collect()
    }

    /// The rollout of `service`.
    pub fn rollout(&self, service: &str) -> Option<&Rollout> {
        self.rollouts.get(service)
    }

    /// The policy of `service`.
    pub fn policy(&self, service: &str) -> Option<&Policy> {
        self.setup.services.get(service).map(|s| &s.policy)
    }

    /// How many times `service`'s policy was replaced since the engine started.
    pub fn policy_generation(&self, service: &str) -> u64 {
        self.generations.get(service).copied().unwrap_or(0)
    }

    /// Puts `policy` in force for `service` while it runs (a policy file edited and valid):
    /// the rollout keeps its phase, step and plan, and every node gets the snapshot the new
    /// policy asks for (its filter config, its traffic share) when that differs. Returns the
    /// new generation. On an error nothing changes.
    pub fn replace_policy(&mut self, service: &str, policy: Policy) -> Result<u64, RolloutError> {
        let setup = self
            .setup
            .services
            .get(service)
            .ok_or_else(|| RolloutError::UnknownService(service.to_owned()))?;
        if policy.service != service {
            return Err(RolloutError::Topology {
                service: service.to_owned(),
                problem: format!(
                    "the policy now names service `{}`: renaming a service needs a restart",
                    policy.service
                ),
            });
        }
        if policy.primary.cluster != setup.policy.primary.cluster
            || policy.shadow_cluster != setup.policy.shadow_cluster
        {
            return Err(RolloutError::Topology {
                service: service.to_owned(),
                problem: "the policy changes the primary or shadow cluster: that needs a restart"
                    .to_owned(),
            });
        }
        let before = self.inputs();
        let mut services = self.setup.services.clone();
        if let Some(entry) = services.get_mut(service) {
            entry.policy = policy;
        }
        let previous = std::mem::replace(&mut self.setup.services, services);
        let inputs = self.inputs();
        let mut pushes = Vec::new();
        if inputs != before {
            for node in &self.setup.nodes {
                let version = self.versions.get(node).map_or(1, |v| v + 1);
                match render(&inputs, version) {
                    Ok(snapshot) => pushes.push((node.clone(), version, snapshot)),
                    Err(e) => {
                        self.setup.services = previous;
                        return Err(e);
                    }
                }
            }
        }
        for (node, version, snapshot) in pushes {
            let record = NodeRecord {
                version,
                inputs: inputs.clone(),
            };
            if let Err(e) = self.store.put_node(&node, &record) {
                self.setup.services = previous;
                return Err(e);
            }
            self.cache.set_snapshot(&node, snapshot)?;
            self.versions.insert(node, version);
        }
        let generation = self.policy_generation(service) + 1;
        self.generations.insert(service.to_owned(), generation);
        Ok(generation)
    }

    /// Where `service`'s synthetic probes go: the endpoints of its primary and shadow clusters
    /// (the shadow's chosen by the policy's `hosts:` section when it has one).
    pub fn targets(&self, service: &str) -> Option<crate::synthetic::Targets> {
        let setup = self.setup.services.get(service)?;
        let of = |cluster: &str| setup.endpoints.get(cluster).cloned().unwrap_or_default();
        Some(crate::synthetic::Targets {
            primary: of(&setup.policy.primary.cluster),
            shadow: of(&setup.policy.shadow_cluster),
        })
    }

    /// The cache snapshots are served from.
    pub fn cache(&self) -> &Arc<SnapshotCache> {
        &self.cache
    }

    fn state_of(&self, service: &str, rollout: &Rollout) -> Option<TrafficState> {
        let setup = self.setup.services.get(service)?;
        Some(TrafficState::desired(
            rollout,
            &setup.policy,
            self.setup.steering,
        ))
    }

    /// The snapshot inputs every node gets for the current rollouts.
    fn inputs_with(&self, rollouts: &BTreeMap<String, Rollout>) -> NodeInputs {
        let services = rollouts
            .iter()
            .filter_map(|(name, rollout)| {
                let setup = self.setup.services.get(name)?;
                let state = self.state_of(name, rollout)?;
                Some(ServiceInputs {
                    filter_config: filter_config(&setup.policy, &state),
                    variant_header: setup
                        .policy
                        .traffic
                        .headers
                        .variant
                        .clone()
                        .unwrap_or_else(|| DEFAULT_VARIANT_HEADER.to_owned()),
                    listener: setup.listener,
                    endpoints: setup.endpoints.clone(),
                    state,
                })
            })
            .collect();
        NodeInputs {
            steering: self.setup.steering,
            filter: self.setup.filter.clone(),
            services,
            access_log: self.setup.access_log.clone(),
        }
    }

    fn inputs(&self) -> NodeInputs {
        self.inputs_with(&self.rollouts)
    }

    /// Applies `input` to `service`'s rollout. A refused input is logged and returned as an
    /// error; an accepted one is committed (state, log line, new node snapshots) before the
    /// snapshots are served. Returns the log entry.
    pub fn apply(&mut self, service: &str, input: Input) -> Result<LogEntry, RolloutError> {
        self.apply_explained(service, input, "")
    }

    /// [`Controller::apply`], with `why` (an analysis decision's explanation; empty for none)
    /// appended to the decision log's note.
    pub fn apply_explained(
        &mut self,
        service: &str,
        input: Input,
        why: &str,
    ) -> Result<LogEntry, RolloutError> {
        let explained = |note: String| {
            if why.is_empty() {
                note
            } else {
                format!("{note}: {why}")
            }
        };
        let current = self
            .rollouts
            .get(service)
            .ok_or_else(|| RolloutError::UnknownService(service.to_owned()))?;
        let mut next = current.clone();
        let outcome = match next.apply(&input) {
            Ok(outcome) => outcome,
            Err(refused) => {
                let entry = LogEntry {
                    seq: 0,
                    input,
                    changed: false,
                    note: explained(format!("refused: {refused}")),
                    phase: current.phase.name().to_owned(),
                    step: current.phase.step().map(|k| k + 1),
                };
                self.store.commit(Change {
                    rollout: current,
                    entry,
                    nodes: Vec::new(),
                })?;
                return Err(RolloutError::Refused(refused));
            }
        };
        let entry = LogEntry {
            seq: 0,
            input,
            changed: outcome.changed,
            note: explained(outcome.note),
            phase: next.phase.name().to_owned(),
            step: next.phase.step().map(|k| k + 1),
        };
        let mut rollouts = self.rollouts.clone();
        rollouts.insert(service.to_owned(), next.clone());
        let inputs = self.inputs_with(&rollouts);
        let mut pushes = Vec::new();
        if inputs != self.inputs() || self.versions.len() < self.setup.nodes.len() {
            for node in &self.setup.nodes {
                let version = self.versions.get(node).map_or(1, |v| v + 1);
                let snapshot = render(&inputs, version)?;
                let record = NodeRecord {
                    version,
                    inputs: inputs.clone(),
                };
                pushes.push((node.clone(), record, snapshot));
            }
        }
        let records: Vec<(&str, &NodeRecord)> = pushes
            .iter()
            .map(|(node, record, _)| (node.as_str(), record))
            .collect();
        let seq = self.store.commit(Change {
            rollout: &next,
            entry: entry.clone(),
            nodes: records,
        })?;
        tracing::info!(service, seq, note = %entry.note, phase = entry.phase, "rollout decision");
        self.rollouts = rollouts;
        for (node, record, snapshot) in pushes {
            self.cache.set_snapshot(&node, snapshot)?;
            self.versions.insert(node, record.version);
        }
        Ok(LogEntry { seq, ..entry })
    }

    /// The status of `service`'s rollout, with the nodes' xDS state and the last decisions.
    pub fn status(&self, service: &str) -> Result<RolloutStatus, RolloutError> {
        let rollout = self
            .rollouts
            .get(service)
            .ok_or_else(|| RolloutError::UnknownService(service.to_owned()))?;
        let traffic = self
            .state_of(service, rollout)
            .ok_or_else(|| RolloutError::UnknownService(service.to_owned()))?;
        let nodes = self
            .setup
            .nodes
            .iter()
            .map(|node| report(node, self.cache.status(node)))
            .collect();
        Ok(RolloutStatus {
            step: rollout.phase.step().map(|k| k + 1),
            mirroring: traffic.mirroring(),
            traffic,
            rollout: rollout.clone(),
            nodes,
            decisions: self.store.decisions(service, 20)?,
        })
    }
}
