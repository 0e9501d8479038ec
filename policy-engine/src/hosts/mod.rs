//! Stratified selection of shadow hosts.
//!
//! A shadow of N hosts should look like the fleet it stands for: the same mix of zones,
//! hardware classes and OS versions. [`select`] samples at random within strata (the cross
//! product of the chosen labels' values) in proportion to each stratum's population
//! ([`apportion`], largest remainder), from a seed, so a choice can be reproduced anywhere, and
//! reports per label how close the sample's shares are to the population's.
//!
//! - [`inventory`]: [`Host`] and [`Inventory`], read from a YAML or JSON file.
//! - [`eds`]: the Envoy EDS edge, `ClusterLoadAssignment` to [`Inventory`] and back.
//! - [`apportion`](mod@apportion): seats per stratum.
//! - [`select`](mod@select): the random choice and its [`Selection`] report.
//!
//! The file format and the policy fields are in `docs/hosts.md`.

pub mod apportion;
pub mod eds;
pub mod inventory;
pub mod select;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use apportion::{apportion, quotas};
pub use eds::to_cluster_load_assignment;
pub use inventory::{Host, Inventory};
pub use select::{LabelReport, LabelValueReport, Selection, StratumReport, select};

/// A policy's `hosts:` section: where the inventory is and how to choose the shadow's hosts.
///
/// ```
/// use doppel_engine::hosts::HostSelectionConfig;
/// let config: HostSelectionConfig = serde_json::from_str(
///     r#"{"inventory": "hosts/checkout.yaml", "size": 12, "strata": ["zone", "hardware"], "seed": 7}"#,
/// ).unwrap();
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSelectionConfig {
    /// The inventory file (YAML, or JSON when it ends in `.json`), relative to the policy file.
    pub inventory: PathBuf,
    /// How many hosts the shadow gets.
    pub size: usize,
    /// The labels whose combinations form the strata, for example `[zone, hardware, os]`.
    /// Empty means one stratum: a plain random sample.
    #[serde(default)]
    pub strata: Vec<String>,
    /// The seed of the random choice: the same seed and inventory give the same hosts.
    #[serde(default)]
    pub seed: u64,
}

impl HostSelectionConfig {
    /// Reads the inventory, a relative `inventory` path taken from `policy_dir` (the folder of
    /// the policy file that holds this section).
    pub fn load_inventory(&self, policy_dir: &Path) -> Result<Inventory, HostsError> {
        Inventory::load(&policy_dir.join(&self.inventory))
    }

    /// Checks what can be checked without the inventory: a non-zero size, label names that are
    /// non-empty and distinct.
    pub fn validate(&self) -> Result<(), HostsError> {
        if self.size == 0 {
            return Err(HostsError::Config("size must be at least 1".to_owned()));
        }
        let mut seen = BTreeSet::new();
        for label in &self.strata {
            if label.trim().is_empty() {
                return Err(HostsError::Config(
                    "a strata label name is empty".to_owned(),
                ));
            }
            if !seen.insert(label) {
                return Err(HostsError::Config(format!(
                    "strata label {label:?} is listed twice"
                )));
            }
        }
        Ok(())
    }
}

/// What can go wrong reading an inventory or choosing hosts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostsError {
    /// The `hosts:` config is invalid.
    #[error("invalid hosts config: {0}")]
    Config(String),
    /// An inventory file could not be read.
    #[error("cannot read host inventory {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An inventory document is malformed or invalid.
    #[error("invalid host inventory {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// One host is invalid.
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The host's id.
        host: String,
        /// Why.
        reason: String,
    },
    /// An EDS assignment could not be read as an inventory.
    #[error("cannot read EDS endpoints of cluster {cluster:?}: {reason}")]
    Eds {
        /// The assignment's cluster name.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// A host lacks a label the strata need.
    #[error("host {host:?} has no label {label:?}, which the strata need")]
    MissingLabel {
        /// The host's id.
        host: String,
        /// The missing label.
        label: String,
    },
    /// Fewer hosts asked for than there are strata.
    #[error(
        "{size} hosts cannot cover {strata} strata: ask for at least {strata} hosts or stratify on fewer labels"
    )]
    TooFewHosts {
        /// Hosts asked for.
        size: usize,
        /// Non-empty strata in the inventory.
        strata: usize,
    },
    /// Enough hosts for one per stratum, but then some stratum would drift more than one host
    /// from its proportional share.
    #[error(
        "{size} hosts cannot cover {strata} strata within one host of their shares: {below_one} strata \
         are due less than one host but only {leftover} hosts are left after rounding down; ask for more \
         hosts or stratify on fewer labels"
    )]
    CannotCover {
        /// Hosts asked for.
        size: usize,
        /// Non-empty strata in the inventory.
        strata: usize,
        /// Strata whose proportional share is below one host.
        below_one: usize,
        /// Hosts left after giving every stratum its share rounded down.
        leftover: usize,
    },
    /// More hosts asked for than the inventory has.
    #[error("{size} hosts asked for but the inventory has only {available}")]
    TooManyHosts {
        /// Hosts asked for.
        size: usize,
        /// Hosts in the inventory.
        available: usize,
    },
    /// A stratum with no hosts was given to [`apportion`].
    #[error("stratum {index} has no hosts")]
    EmptyStratum {
        /// Its position.
        index: usize,
    },
}

impl HostsError {
    /// A stable short code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Read { .. } => "read",
            Self::Parse { .. } => "parse",
            Self::InvalidHost { .. } => "invalid_host",
            Self::Eds { .. } => "eds",
            Self::MissingLabel { .. } => "missing_label",
            Self::TooFewHosts { .. } => "too_few_hosts",
            Self::CannotCover { .. } => "cannot_cover",
            Self::TooManyHosts { .. } => "too_many_hosts",
            Self::EmptyStratum { .. } => "empty_stratum",
        }
    }

    fn invalid_host(host: &Host, reason: &str) -> Self {
        Self::InvalidHost {
            host: host.id.clone(),
            reason: reason.to_owned(),
        }
    }
}
