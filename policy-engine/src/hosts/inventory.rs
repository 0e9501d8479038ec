//! The host inventory: every host a shadow may be placed on, with its labels. Read from a file
//! (YAML or JSON, see `docs/hosts.md`) or converted from Envoy EDS endpoints (see [`super::eds`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::HostsError;

/// One host: a stable id, where to reach it, and its labels (zone, hardware, os, ...).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Stable, unique id (a host name or instance id).
    pub id: String,
    /// IP address or DNS name Envoy connects to.
    pub address: String,
    /// TCP port Envoy connects to.
    pub port: u16,
    /// Labels by name, for example `zone: eu-west-1a`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Host {
    /// The value of one label, if the host has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// A validated set of hosts: ids are unique and non-empty, every host has an address and a port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    hosts: Vec<Host>,
}

/// The file format: a top-level `hosts:` list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    hosts: Vec<Host>,
}

impl Inventory {
    /// Validates `hosts` into an inventory, sorted by id.
    ///
    /// ```
    /// use doppel_engine::hosts::{Host, Inventory};
    /// let host = |id: &str| Host { id: id.into(), address: "10.0.0.1".into(), port: 80, labels: Default::default() };
    /// assert!(Inventory::new(vec![host("a"), host("b")]).is_ok());
    /// assert!(Inventory::new(vec![host("a"), host("a")]).is_err());
    /// ```
    pub fn new(mut hosts: Vec<Host>) -> Result<Self, HostsError> {
        let mut seen = BTreeSet::new();
        for host in &hosts {
            if host.id.trim().is_empty() {
                return Err(HostsError::invalid_host(host, "the id is empty"));
            }
            if host.address.trim().is_empty() {
                return Err(HostsError::invalid_host(host, "the address is empty"));
            }
            if host.port == 0 {
                return Err(HostsError::invalid_host(host, "the port is 0"));
            }
            if let Some((name, _)) = host.labels.iter().find(|(name, _)| name.trim().is_empty()) {
                return Err(HostsError::invalid_host(
                    host,
                    &format!("label name {name:?} is empty"),
                ));
            }
            if !seen.insert(host.id.as_str()) {
                return Err(HostsError::invalid_host(host, "the id appears twice"));
            }
        }
        hosts.sort();
        Ok(Self { hosts })
    }

    /// Parses an inventory document: JSON when `path` ends in `.json`, YAML otherwise.
    /// `path` only names the document in errors and picks the format.
    pub fn parse(path: &Path, text: &str) -> Result<Self, HostsError> {
        let is_json = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        let file: InventoryFile = if is_json {
            serde_json::from_str(text).map_err(|e| HostsError::Parse {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?
        } else {
            serde_saphyr::from_str(text).map_err(|e| HostsError::Parse {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?
        };
        Self::new(file.hosts).map_err(|e| HostsError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Reads and parses an inventory file (see [`Inventory::parse`]).
    pub fn load(path: &Path) -> Result<Self, HostsError> {
        let text = std::fs::read_to_string(path).map_err(|e| HostsError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(path, &text)
    }

    /// The hosts, sorted by id.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// How many hosts there are.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there are no hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}
