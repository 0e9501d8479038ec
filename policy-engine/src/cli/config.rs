//! The `doppel serve` config file (YAML):
//!
//! ```yaml
//! steering: full_ads          # or filter_only
//! filter: { kind: none }      # or { kind: wasm, path: /etc/doppel/doppel_filter.wasm,
//!                             #      split_path: /etc/doppel/doppel_filter_split.wasm }
//! nodes: [envoy-1]            # Envoy node ids served
//! access_log_cluster: doppel_engine   # optional, full ADS: access logs (sample ids) to the engine
//! services:
//!   - policy: policies/checkout.yaml   # relative to this file
//!     listener: 127.0.0.1:10000         # full ADS: where the service's listener binds
//!     endpoints:                        # full ADS: hosts of each cluster the policy names
//!       checkout-v1: [127.0.0.1:8081]
//!       checkout-v2: [127.0.0.1:8082]
//! ```
//!
//! A policy with a `hosts:` section gets its shadow cluster's endpoints from the hosts chosen
//! from its inventory (they replace any listed here). Either way, a shadow endpoint that is
//! also one of the primary's is refused, naming the address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::hosts;
use crate::policy;
use crate::policy::validate::endpoint_overlap;
use crate::rollout::filter_config::FilterKind;
use crate::rollout::{ServiceSetup, Setup, Steering};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Full ADS or filter-only.
    #[serde(default)]
    pub steering: Steering,
    /// How the filter config is packed.
    #[serde(default)]
    pub filter: FilterKind,
    /// The Envoy node ids served.
    pub nodes: Vec<String>,
    /// The services.
    pub services: Vec<ServiceConfig>,
    /// Full ADS: the cluster of Envoy's bootstrap that reaches the engine's gRPC ingest
    /// (`doppel_engine` in envoy/ads.yaml). Set, the listeners stream their access logs there and
    /// decisions name the doppel ids of sample shadowed requests.
    #[serde(default)]
    pub access_log_cluster: Option<String>,
}

/// One service entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The policy file.
    pub policy: PathBuf,
    /// Where its listener binds (full ADS).
    #[serde(default)]
    pub listener: Option<SocketAddr>,
    /// Hosts per cluster (full ADS).
    #[serde(default)]
    pub endpoints: BTreeMap<String, Vec<SocketAddr>>,
}

/// Reads and parses the config file at `path`.
fn read(path: &Path) -> Result<ServeConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the serve config {}: {e}", path.display()))?;
    serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The policy files the config at `path` names, as paths from here.
pub fn policy_paths(path: &Path) -> Result<Vec<PathBuf>, String> {
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(read(path)?
        .services
        .iter()
        .map(|service| base.join(&service.policy))
        .collect())
}

/// Reads the config at `path` and loads every policy it names.
pub fn load(path: &Path) -> Result<Setup, String> {
    let config = read(path)?;
    if config.nodes.is_empty() {
        return Err(format!("{}: `nodes` names no Envoy node", path.display()));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut services = BTreeMap::new();
    for service in config.services {
        let file = base.join(&service.policy);
        let policy = policy::load(&file).map_err(|e| e.to_string())?;
        if config.steering == Steering::FullAds && service.listener.is_none() {
            return Err(format!(
                "{}: service `{}` needs a `listener` address in full_ads steering",
                path.display(),
                policy.service
            ));
        }
        let name = policy.service.clone();
        let mut endpoints = service.endpoints;
        if let Some(config) = &policy.hosts {
            let dir = file.parent().unwrap_or(Path::new("."));
            let chosen = shadow_hosts(config, dir)
                .map_err(|e| format!("{}: service `{name}`: hosts: {e}", file.display()))?;
            endpoints.insert(policy.shadow_cluster.clone(), chosen);
        }
        let of = |cluster: &str| endpoints.get(cluster).cloned().unwrap_or_default();
        if let Some(address) =
            endpoint_overlap(&of(&policy.primary.cluster), &of(&policy.shadow_cluster))
        {
            return Err(format!(
                "{}: service `{name}`: the shadow cluster `{}` and the primary cluster `{}` share the endpoint {address}: the shadow must not share the primary's endpoints",
                path.display(),
                policy.shadow_cluster,
                policy.primary.cluster
            ));
        }
        let setup = ServiceSetup {
            policy,
            listener: service.listener,
            endpoints,
        };
        if services.insert(name.clone(), setup).is_some() {
            return Err(format!(
                "{}: service `{name}` appears twice",
                path.display()
            ));
        }
    }
    Ok(Setup {
        steering: config.steering,
        filter: config.filter,
        nodes: config.nodes,
        services,
        access_log: config.access_log_cluster,
    })
}

/// The shadow's hosts chosen by a policy's `hosts:` section, as socket addresses; the
/// selection's report is logged. Hosts must be IP addresses here (Envoy's STATIC clusters).
fn shadow_hosts(
    config: &hosts::HostSelectionConfig,
    dir: &Path,
) -> Result<Vec<SocketAddr>, String> {
    let inventory = config.load_inventory(dir).map_err(|e| e.to_string())?;
    let selection = hosts::select(&inventory, config).map_err(|e| e.to_string())?;
    let largest_drift = selection
        .labels
        .iter()
        .map(|(label, report)| format!("{label}: {:.3}", report.max_difference))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        hosts = selection.hosts.len(),
        seed = selection.seed,
        largest_drift,
        "shadow hosts chosen by stratum"
    );
    selection
        .hosts
        .iter()
        .map(|h| {
            format!("{}:{}", h.address, h.port)
                .parse::<SocketAddr>()
                .or_else(|_| format!("[{}]:{}", h.address, h.port).parse())
                .map_err(|_| {
                    format!(
                        "host `{}` has address `{}`: the shadow's endpoints must be IP addresses",
                        h.id, h.address
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "service: checkout\nprimary:\n  cluster: v1\nshadow:\n  cluster: v2\ntraffic:\n  mode: split\n  percent: 1\nanalysis:\n  interval: 10s\n  min_sample: 100\n  alpha: 0.01\nrules:\n  - name: errors\n    when: compare.errors.worse\n    action: rollback\n";

    fn load_text(config: &str) -> Result<Setup, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("p.yaml"), POLICY).map_err(|e| e.to_string())?;
        let path = dir.path().join("serve.yaml");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        load(&path)
    }

    #[test]
    fn rollout_serve_config_loads_and_names_its_problems() {
        let setup = load_text(
            "nodes: [e1]\nfilter: { kind: wasm, path: /f.wasm }\nservices:\n  - policy: p.yaml\n    listener: 127.0.0.1:0\n    endpoints: { v1: [\"127.0.0.1:1\"] }\n",
        )
        .expect("loads");
        assert_eq!(setup.steering, Steering::FullAds);
        assert_eq!(
            setup.filter,
            FilterKind::Wasm {
                path: "/f.wasm".into(),
                split_path: None,
            }
        );
        let both = load_text(
            "steering: filter_only\nnodes: [e1]\nfilter: { kind: wasm, path: /f.wasm, split_path: /s.wasm }\nservices: []\n",
        )
        .expect("loads");
        assert_eq!(
            both.filter,
            FilterKind::Wasm {
                path: "/f.wasm".into(),
                split_path: Some("/s.wasm".into()),
            }
        );
        let misspelt = load_text(
            "steering: filter_only\nnodes: [e1]\nfilter: { kind: wasm, path: /f.wasm, split: /s.wasm }\nservices: []\n",
        )
        .unwrap_err();
        assert!(misspelt.contains("split"), "{misspelt}");
        assert_eq!(setup.services["checkout"].endpoints["v1"].len(), 1);

        let no_listener = load_text("nodes: [e1]\nservices:\n  - policy: p.yaml\n").unwrap_err();
        assert!(no_listener.contains("listener"), "{no_listener}");
        let no_nodes = load_text("nodes: []\nservices: []\n").unwrap_err();
        assert!(no_nodes.contains("nodes"), "{no_nodes}");
        let unknown = load_text("nodes: [e1]\nservices: []\nsteer: x\n").unwrap_err();
        assert!(unknown.contains("steer"), "{unknown}");
        let only = load_text("steering: filter_only\nnodes: [e1]\nservices:\n  - policy: p.yaml\n")
            .expect("filter-only needs no listener");
        assert_eq!(only.steering, Steering::FilterOnly);
    }

    #[test]
    fn rollout_hosts_choice_becomes_the_shadow_endpoints_and_overlap_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inventory = "hosts:\n\
            \x20 - {id: a1, address: 10.0.1.1, port: 80, labels: {zone: a}}\n\
            \x20 - {id: a2, address: 10.0.1.2, port: 80, labels: {zone: a}}\n\
            \x20 - {id: a3, address: 10.0.1.3, port: 80, labels: {zone: a}}\n\
            \x20 - {id: b1, address: 10.0.2.1, port: 80, labels: {zone: b}}\n";
        std::fs::write(dir.path().join("inv.yaml"), inventory).expect("inventory");
        let policy = format!(
            "{POLICY}hosts:\n  inventory: inv.yaml\n  size: 2\n  strata: [zone]\n  seed: 3\n"
        );
        std::fs::write(dir.path().join("p.yaml"), policy).expect("policy");
        let write = |endpoints: &str| {
            let path = dir.path().join("serve.yaml");
            std::fs::write(
                &path,
                format!("nodes: [e1]\nservices:\n  - policy: p.yaml\n    listener: 127.0.0.1:0\n    endpoints: {endpoints}\n"),
            )
            .expect("serve config");
            load(&path)
        };
        let setup = write(r#"{ v1: ["127.0.0.1:1"], v2: ["127.0.0.1:2"] }"#).expect("loads");
        let shadow = &setup.services["checkout"].endpoints["v2"];
        // One host per zone (2 hosts, 2 strata), replacing the listed endpoint.
        assert_eq!(shadow.len(), 2, "{shadow:?}");
        assert!(
            shadow
                .iter()
                .any(|a| a.ip().to_string().starts_with("10.0.1."))
        );
        assert!(shadow.contains(&"10.0.2.1:80".parse().expect("addr")));
        let again = write(r#"{ v1: ["127.0.0.1:1"] }"#).expect("loads");
        assert_eq!(
            &again.services["checkout"].endpoints["v2"], shadow,
            "same seed, same hosts"
        );
        // A chosen host that the primary also uses is refused, naming it.
        let overlap = write(r#"{ v1: ["10.0.2.1:80"] }"#).unwrap_err();
        assert!(
            overlap.contains("10.0.2.1:80") && overlap.contains("share"),
            "{overlap}"
        );
    }
}
