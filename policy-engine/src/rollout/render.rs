//! A node's snapshot from its inputs: the traffic state of each service plus the topology
//! (listener address, endpoints per cluster, filter kind). The inputs are what the store keeps,
//! so the same inputs and version rebuild the same snapshot after a restart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RolloutError;
use super::filter_config::{FilterKind, envoy_mirror, parsed, pool_per_million, stripped_by_envoy};
use super::traffic::{Steering, TrafficState};
use crate::xds::Snapshot;
use crate::xds::build::{
    Pool, ecds_filter, eds_cluster, endpoints, grpc_access_log, header_mirror,
    http_listener_logged, variant_route,
};

/// Route weights are integers out of this total, so a share of 0.01% still shows.
pub const WEIGHT_TOTAL: u32 = 10_000;

/// Connect timeout of the clusters doppel serves.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything one node's snapshot is built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInputs {
    /// Full ADS or filter-only.
    pub steering: Steering,
    /// How the filter config is packed.
    pub filter: FilterKind,
    /// One entry per service the node serves, in service order.
    pub services: Vec<ServiceInputs>,
    /// Full ADS: the cluster (in Envoy's bootstrap) the listeners stream access logs to, for
    /// the doppel ids of sample requests; `None` for no access log.
    #[serde(default)]
    pub access_log: Option<String>,
}

/// The access log's name (`log_name`) in Envoy's messages.
pub const ACCESS_LOG_NAME: &str = "doppel";

/// One service's part of a node's snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceInputs {
    /// What the rollout wants.
    pub state: TrafficState,
    /// The filter's JSON config for that state.
    pub filter_config: Value,
    /// The header the filter marks shadowed requests with.
    pub variant_header: String,
    /// Where the service's listener binds (full ADS).
    pub listener: Option<SocketAddr>,
    /// Endpoints of each cluster (full ADS).
    pub endpoints: BTreeMap<String, Vec<SocketAddr>>,
}

/// The ECDS resource (and HTTP filter) name of `service`'s filter.
pub fn filter_name(service: &str) -> String {
    format!("doppel.{service}")
}

/// The ECDS resource (and HTTP filter) name of `service`'s filter when it runs on a pool. Its
/// config differs from [`filter_name`]'s (`pool_percent`), and the listener refers to one or
/// the other: a listener switching setups waits for the config made for its own (Envoy warms a
/// listener until its filters' ECDS configs arrive) instead of running the other's for a moment,
/// and one still draining keeps its own. Both are served while the pool exists.
pub fn pool_filter_name(service: &str) -> String {
    format!("doppel.{service}.pool")
}

/// `(primary units, shadow units)` out of [`WEIGHT_TOTAL`] for a shadow share in percent.
pub fn route_units(shadow_percent: f64) -> (u32, u32) {
    let clamped = shadow_percent.clamp(0.0, 100.0);
    // In [0, 10000] after the clamp: the cast cannot truncate.
    let shadow = (clamped * f64::from(WEIGHT_TOTAL) / 100.0).round() as u32;
    (WEIGHT_TOTAL - shadow, shadow)
}

/// Builds `inputs`' snapshot under `version`.
pub fn render(inputs: &NodeInputs, version: u64) -> Result<Snapshot, RolloutError> {
    let mut builder = Snapshot::builder(version);
    for service in &inputs.services {
        let name = filter_name(&service.state.service);
        if inputs.steering == Steering::FilterOnly {
            let parsed = parsed(&service.filter_config);
            if let Some(config) =
                inputs
                    .filter
                    .extension(&name, &service.filter_config, parsed.as_ref())
            {
                builder = builder.extension_config(&config);
            }
            continue;
        }
        // Requests are marked (variant, mirror_to) by the filter, or by a trusted hop in front
        // (`trusted_control`); only then do the routes read the marks. Full ADS: the listener's
        // connection manager strips client-sent marks before the filter runs, and the filter is
        // told so; trusted marks are kept.
        let config = parsed(&service.filter_config);
        let trusted = config.as_ref().is_some_and(|c| c.trusted_control);
        let filtered = inputs.filter.type_url().is_some();
        let marked = filtered || trusted;
        let strip: Vec<String> = match &config {
            Some(c) if filtered && !trusted => c.headers.control().map(str::to_owned).to_vec(),
            _ => Vec::new(),
        };
        // A filter whose control headers Envoy strips runs only on the requests it may choose
        // or measure, a share the route draws at random (its pool), unless it must see them all.
        let pool = config
            .as_ref()
            .filter(|_| !strip.is_empty())
            .and_then(pool_per_million);
        let every = if strip.is_empty() {
            service.filter_config.clone()
        } else {
            stripped_by_envoy(&service.filter_config, None)
        };
        if let Some(extension) = inputs.filter.extension(&name, &every, config.as_ref()) {
            builder = builder.extension_config(&extension);
        }
        let name = match pool {
            Some(per_million) => {
                let pooled = pool_filter_name(&service.state.service);
                let pushed = stripped_by_envoy(&service.filter_config, Some(per_million));
                if let Some(extension) = inputs.filter.extension(&pooled, &pushed, config.as_ref())
                {
                    builder = builder.extension_config(&extension);
                }
                pooled
            }
            None => name,
        };
        let state = &service.state;
        let listener = service.listener.ok_or_else(|| RolloutError::Topology {
            service: state.service.clone(),
            problem: "full ADS needs a listener address".to_owned(),
        })?;
        let mut clusters = vec![state.primary_cluster.as_str()];
        if state.shadow_cluster != state.primary_cluster {
            clusters.push(&state.shadow_cluster);
        }
        for cluster in clusters {
            let hosts = service
                .endpoints
                .get(cluster)
                .filter(|hosts| !hosts.is_empty())
                .ok_or_else(|| RolloutError::Topology {
                    service: state.service.clone(),
                    problem: format!("no endpoints for cluster `{cluster}`"),
                })?;
            builder = builder
                .cluster(&eds_cluster(cluster, CONNECT_TIMEOUT))
                .endpoints(&endpoints(cluster, hosts));
        }
        let filters = match inputs.filter.type_url() {
            Some(url) => vec![HttpFilter {
                disabled: pool.is_some(),
                ..ecds_filter(&name, &[&url])
            }],
            None => Vec::new(),
        };
        let (primary, shadow) = route_units(state.route_weight);
        let access_logs = inputs
            .access_log
            .iter()
            .map(|cluster| {
                grpc_access_log(cluster, ACCESS_LOG_NAME, crate::accesslog::logged_keys())
            })
            .collect();
        let mirror = config.as_ref().and_then(envoy_mirror).filter(|_| marked);
        builder = builder
            .listener(&http_listener_logged(
                &state.service,
                listener,
                &state.service,
                filters,
                access_logs,
                &strip,
            ))
            .route(&variant_route(
                &state.service,
                marked.then_some(service.variant_header.as_str()),
                &state.shadow_cluster,
                &[
                    (state.primary_cluster.as_str(), primary),
                    (state.shadow_cluster.as_str(), shadow),
                ],
                mirror.as_ref().map(|(mirror_to, marker)| {
                    (mirror_to.as_str(), header_mirror(mirror_to, marker))
                }),
                pool.map(|per_million| Pool {
                    filter: &name,
                    per_million,
                }),
            ));
    }
    let snapshot = builder.build()?;
    snapshot.check()?;
    Ok(snapshot)
}
