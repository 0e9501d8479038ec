//! The resource types doppel serves over ADS, and one resource packed for the wire.
//!
//! A [`Resource`] is encoded into a protobuf `Any` once, when it is added to a snapshot; every
//! stream then sends those bytes. While packing, it notes the other resources it refers to
//! (a route's clusters, a listener's route configuration), which is what the snapshot's
//! consistency check walks.

use std::fmt;
use std::hash::{Hash, Hasher};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as NetworkFilterConfig;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, RequestMirrorPolicy,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
    http_filter::ConfigType as HttpFilterConfig,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::SnapshotError;

/// One of the xDS resource types doppel serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// ECDS: `envoy.config.core.v3.TypedExtensionConfig` (the filter's config, named like the filter).
    ExtensionConfig,
}

impl ResourceType {
    /// Every type, in the order a change is pushed: CDS before EDS, then LDS before RDS, then
    /// ECDS (Envoy's xDS protocol, "eventual consistency considerations").
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::ExtensionConfig,
    ];

    /// The `type_url` of this type on the wire.
    pub const fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::ExtensionConfig => {
                "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
            }
        }
    }

    /// The type whose `type_url` this is, if doppel serves it.
    pub fn from_type_url(type_url: &str) -> Option<ResourceType> {
        ResourceType::ALL
            .into_iter()
            .find(|kind| kind.type_url() == type_url)
    }

    /// A short stable code (`cds`, `eds`, `lds`, `rds`, `ecds`) for logs and metric labels.
    pub const fn code(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::Endpoint => "eds",
            ResourceType::Listener => "lds",
            ResourceType::Route => "rds",
            ResourceType::ExtensionConfig => "ecds",
        }
    }

    /// Whether an empty subscription means "everything" (CDS and LDS), as opposed to "nothing".
    pub const fn wildcard_by_default(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// Position in [`ResourceType::ALL`], for per-type arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            ResourceType::Cluster => 0,
            ResourceType::Endpoint => 1,
            ResourceType::Listener => 2,
            ResourceType::Route => 3,
            ResourceType::ExtensionConfig => 4,
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A resource another resource needs: the snapshot must hold it too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reference {
    /// The type of the resource referred to.
    pub kind: ResourceType,
    /// Its name.
    pub name: String,
}

/// One named resource, packed as `Any` once, with a content version and what it refers to.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    kind: ResourceType,
    name: String,
    any: Any,
    version: String,
    references: Vec<Reference>,
}

impl Resource {
    /// Packs a cluster. An EDS cluster refers to its load assignment.
    pub fn cluster(cluster: &Cluster) -> Result<Resource, SnapshotError> {
        let mut references = Vec::new();
        if cluster.cluster_discovery_type
            == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        {
            let service = cluster
                .eds_cluster_config
                .as_ref()
                .map(|eds| eds.service_name.as_str())
                .filter(|name| !name.is_empty())
                .unwrap_or(&cluster.name);
            references.push(Reference {
                kind: ResourceType::Endpoint,
                name: service.to_owned(),
            });
        }
        Resource::pack(ResourceType::Cluster, &cluster.name, cluster, references)
    }

    /// Packs a cluster load assignment (EDS), named by its `cluster_name`.
    pub fn endpoints(assignment: &ClusterLoadAssignment) -> Result<Resource, SnapshotError> {
        Resource::pack(
            ResourceType::Endpoint,
            &assignment.cluster_name,
            assignment,
            Vec::new(),
        )
    }

    /// Packs a route configuration. It refers to every cluster its routes send or mirror to.
    pub fn route(route: &RouteConfiguration) -> Result<Resource, SnapshotError> {
        let references = route_clusters(&route.virtual_hosts, &route.request_mirror_policies);
        Resource::pack(ResourceType::Route, &route.name, route, references)
    }

    /// Packs a listener. Each HTTP connection manager in it refers to its route configuration
    /// (RDS) or, when inline, to that configuration's clusters, and to each filter whose config
    /// comes over ADS (ECDS).
    pub fn listener(listener: &Listener) -> Result<Resource, SnapshotError> {
        let mut references = Vec::new();
        let chains = listener
            .filter_chains
            .iter()
            .chain(listener.default_filter_chain.as_ref());
        for filter in chains.flat_map(|chain| &chain.filters) {
            let Some(NetworkFilterConfig::TypedConfig(any)) = &filter.config_type else {
                continue;
            };
            if any.type_url != HttpConnectionManager::type_url() {
                continue;
            }
            let hcm = HttpConnectionManager::decode(any.value.as_slice()).map_err(|error| {
                SnapshotError::Undecodable {
                    kind: ResourceType::Listener,
                    name: listener.name.clone(),
                    detail: format!("filter `{}`: {error}", filter.name),
                }
            })?;
            references.extend(hcm_references(&hcm));
        }
        Resource::pack(ResourceType::Listener, &listener.name, listener, references)
    }

    /// Packs an extension config (ECDS), named like the filter it configures.
    pub fn extension_config(config: &TypedExtensionConfig) -> Result<Resource, SnapshotError> {
        Resource::pack(
            ResourceType::ExtensionConfig,
            &config.name,
            config,
            Vec::new(),
        )
    }

    fn pack<M: Message + Name>(
        kind: ResourceType,
        name: &str,
        message: &M,
        references: Vec<Reference>,
    ) -> Result<Resource, SnapshotError> {
        if name.is_empty() {
            return Err(SnapshotError::EmptyName { kind });
        }
        let any = Any {
            type_url: M::type_url(),
            value: message.encode_to_vec(),
        };
        let mut hasher = std::hash::DefaultHasher::new();
        any.value.hash(&mut hasher);
        Ok(Resource {
            kind,
            name: name.to_owned(),
            version: format!("{:016x}", hasher.finish()),
            any,
            references,
        })
    }

    /// The resource's type.
    pub fn kind(&self) -> ResourceType {
        self.kind
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The packed resource, as it goes on the wire.
    pub fn any(&self) -> &Any {
        &self.any
    }

    /// A version derived from the content: equal content, equal version (delta xDS uses it).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The resources this one needs.
    pub(crate) fn references(&self) -> &[Reference] {
        &self.references
    }
}

fn hcm_references(hcm: &HttpConnectionManager) -> Vec<Reference> {
    let mut references = match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => vec![Reference {
            kind: ResourceType::Route,
            name: rds.route_config_name.clone(),
        }],
        Some(RouteSpecifier::RouteConfig(inline)) => {
            route_clusters(&inline.virtual_hosts, &inline.request_mirror_policies)
        }
        Some(RouteSpecifier::ScopedRoutes(_)) | None => Vec::new(),
    };
    for filter in &hcm.http_filters {
        let Some(HttpFilterConfig::ConfigDiscovery(discovery)) = &filter.config_type else {
            continue;
        };
        let over_ads = discovery.config_source.as_ref().is_some_and(|source| {
            matches!(
                source.config_source_specifier,
                Some(ConfigSourceSpecifier::Ads(_))
            )
        });
        if over_ads {
            references.push(Reference {
                kind: ResourceType::ExtensionConfig,
                name: filter.name.clone(),
            });
        }
    }
    references
}

fn route_clusters(hosts: &[VirtualHost], mirrors: &[RequestMirrorPolicy]) -> Vec<Reference> {
    fn mirrored<'a>(policies: &'a [RequestMirrorPolicy], names: &mut Vec<&'a str>) {
        // A policy naming its cluster in a header (`cluster_header`) references none here.
        names.extend(
            policies
                .iter()
                .map(|policy| policy.cluster.as_str())
                .filter(|cluster| !cluster.is_empty()),
        );
    }
    let mut names: Vec<&str> = Vec::new();
    mirrored(mirrors, &mut names);
    for host in hosts {
        mirrored(&host.request_mirror_policies, &mut names);
        for route in &host.routes {
            let Some(Action::Route(action)) = &route.action else {
                continue;
            };
            mirrored(&action.request_mirror_policies, &mut names);
            match &action.cluster_specifier {
                Some(ClusterSpecifier::Cluster(name)) => names.push(name),
                Some(ClusterSpecifier::WeightedClusters(weighted)) => {
                    names.extend(weighted.clusters.iter().map(|c| c.name.as_str()));
                }
                _ => {}
            }
        }
    }
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter(|name| !name.is_empty())
        .map(|name| Reference {
            kind: ResourceType::Cluster,
            name: name.to_owned(),
        })
        .collect()
}
