//! Constructors for the Envoy resources a snapshot usually holds: an EDS cluster, its endpoints,
//! an HTTP listener taking its routes over RDS, weighted and variant-header routes, a filter
//! configured over ECDS.
//! They build plain envoy-types structs; callers may change any field before adding them.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::common::mutation_rules::v3::HeaderMutation;
use envoy_types::pb::envoy::config::common::mutation_rules::v3::header_mutation::Action as MutationAction;
use envoy_types::pb::envoy::config::core::v3::GrpcService;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::grpc_service::{EnvoyGrpc, TargetSpecifier};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, ExtensionConfigSource, HeaderValue,
    HeaderValueOption, RuntimeFractionalPercent, SocketAddress, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::weighted_cluster::ClusterWeight;
use envoy_types::pb::envoy::config::route::v3::{
    FilterConfig, HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    WeightedCluster,
};
use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3::{
    CommonGrpcAccessLogConfig, HttpGrpcAccessLogConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3::HeaderMutation as EarlyHeaderMutation;
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use prost::{Message, Name};

/// Packs any envoy-types message as `Any`.
pub fn pack<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// "Over ADS" as a config source.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// A socket address.
pub fn socket_address(address: SocketAddr) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: address.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(address.port()))),
            ..Default::default()
        })),
    }
}

/// A cluster whose endpoints come over ADS (EDS) under its own name.
pub fn eds_cluster(name: &str, connect_timeout: Duration) -> Cluster {
    Cluster {
        name: name.to_owned(),
        connect_timeout: Some(PbDuration {
            seconds: i64::try_from(connect_timeout.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(connect_timeout.subsec_nanos()).unwrap_or(0),
        }),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

/// The load assignment (EDS) of `cluster`: one locality holding `hosts`.
pub fn endpoints(cluster: &str, hosts: &[SocketAddr]) -> ClusterLoadAssignment {
    let lb_endpoints = hosts
        .iter()
        .map(|host| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(*host)),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An HTTP filter whose config comes over ADS (ECDS) as the resource named `name`, of a type
/// in `type_urls` (for the doppel filter: `envoy.extensions.filters.http.wasm.v3.Wasm`).
pub fn ecds_filter(name: &str, type_urls: &[&str]) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::ConfigDiscovery(
            ExtensionConfigSource {
                config_source: Some(ads_config_source()),
                type_urls: type_urls.iter().map(|url| (*url).to_owned()).collect(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// An extension config (ECDS resource) named `name` holding `config`.
pub fn extension_config<M: Message + Name>(name: &str, config: &M) -> TypedExtensionConfig {
    TypedExtensionConfig {
        name: name.to_owned(),
        typed_config: Some(pack(config)),
    }
}

/// A listener on `address` whose HTTP connection manager runs `filters` then the router, and
/// takes route configuration `route_config` over ADS (RDS).
pub fn http_listener(
    name: &str,
    address: SocketAddr,
    route_config: &str,
    filters: Vec<HttpFilter>,
) -> Listener {
    http_listener_logged(name, address, route_config, filters, Vec::new(), &[])
}

/// An access log streamed over gRPC (Envoy's AccessLogService) to `cluster`, named `log_name`,
/// carrying the filter-state objects `filter_state` of each request.
pub fn grpc_access_log(cluster: &str, log_name: &str, filter_state: Vec<String>) -> AccessLog {
    let config = HttpGrpcAccessLogConfig {
        common_config: Some(CommonGrpcAccessLogConfig {
            log_name: log_name.to_owned(),
            grpc_service: Some(GrpcService {
                target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                    cluster_name: cluster.to_owned(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
            filter_state_objects_to_log: filter_state,
            ..Default::default()
        }),
        ..Default::default()
    };
    AccessLog {
        name: "envoy.access_loggers.http_grpc".to_owned(),
        config_type: Some(access_log::ConfigType::TypedConfig(pack(&config))),
        ..Default::default()
    }
}

/// [`http_listener`] whose connection manager also writes `access_logs` and removes the headers
/// `strip` from every request before its filters run ([`early_strip`]).
pub fn http_listener_logged(
    name: &str,
    address: SocketAddr,
    route_config: &str,
    filters: Vec<HttpFilter>,
    access_logs: Vec<AccessLog>,
    strip: &[String],
) -> Listener {
    let mut http_filters = filters;
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            &Router::default(),
        ))),
        ..Default::default()
    });
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_config.to_owned(),
        })),
        http_filters,
        access_log: access_logs,
        early_header_mutation_extensions: early_strip(strip).into_iter().collect(),
        ..Default::default()
    };
    Listener {
        name: name.to_owned(),
        address: Some(socket_address(address)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The connection manager's early header mutation removing `names` from every request, before
/// route selection and before any filter: what doppel's control headers need when the filter
/// leaves them to Envoy (`strip_control: envoy`). `None` for no names.
pub fn early_strip(names: &[String]) -> Option<TypedExtensionConfig> {
    if names.is_empty() {
        return None;
    }
    let mutation = EarlyHeaderMutation {
        mutations: names
            .iter()
            .map(|name| HeaderMutation {
                action: Some(MutationAction::Remove(name.clone())),
            })
            .collect(),
    };
    Some(extension_config(
        "envoy.http.early_header_mutation.header_mutation",
        &mutation,
    ))
}

/// A route configuration sending every request, any host, to `weights` (cluster, weight).
pub fn weighted_route(name: &str, weights: &[(&str, u32)]) -> RouteConfiguration {
    route_config(name, vec![weighted(weights)])
}

/// Envoy's router copies a request to the cluster its `mirror_to` header names (the filter
/// writes it on the requests it chose to mirror, with `mirror.sender: envoy`; a request without
/// it is not copied). The copy loses `mirror_to` and gets `marker: 1`, as a copy the filter sends
/// does; it keeps its authority (no `-shadow` suffix).
pub fn header_mirror(mirror_to: &str, marker: &str) -> RequestMirrorPolicy {
    let mutation = |action| HeaderMutation {
        action: Some(action),
    };
    RequestMirrorPolicy {
        cluster_header: mirror_to.to_owned(),
        disable_shadow_host_suffix_append: true,
        request_headers_mutations: vec![
            mutation(MutationAction::Remove(mirror_to.to_owned())),
            mutation(MutationAction::Append(HeaderValueOption {
                header: Some(HeaderValue {
                    key: marker.to_owned(),
                    value: "1".to_owned(),
                    ..Default::default()
                }),
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..Default::default()
            })),
        ],
        ..Default::default()
    }
}

/// Requests drawn at random by the route that run an HTTP filter Envoy otherwise skips (the
/// listener's `HttpFilter` has `disabled: true`): the filter's pool (its `pool_percent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool<'a> {
    /// The filter's name in the connection manager.
    pub filter: &'a str,
    /// Requests in the pool out of every million.
    pub per_million: u32,
}

/// The split route: a request whose `variant_header` is `shadow` (the filter sets it on the
/// requests it chose) goes to cluster `shadow`; every other request goes to `weights`. Without
/// `variant_header` (nothing marks requests), only the weights. With
/// `mirror` (`mirror_to` header, policy: [`header_mirror`]), a request carrying the header (the
/// filter chose it to be copied) takes a route of its own that copies it: a mirror policy costs
/// Envoy more per request even when it copies nothing, so the other requests' route has none.
/// With `pool`, the share of the other requests it names goes to `weights` through a route that
/// enables the pool's filter. The filter chain is made once, on the first route a request takes,
/// so a request the filter then marks keeps the filter on its way to the shadow; the marked
/// routes come first, so a pool request matched again (the filter cleared the route cache)
/// finds them whatever the draw.
pub fn variant_route(
    name: &str,
    variant_header: Option<&str>,
    shadow: &str,
    weights: &[(&str, u32)],
    mirror: Option<(&str, RequestMirrorPolicy)>,
    pool: Option<Pool<'_>>,
) -> RouteConfiguration {
    let mut routes = Vec::new();
    if let Some(variant_header) = variant_header {
        let exact = StringMatcher {
            match_pattern: Some(MatchPattern::Exact("shadow".to_owned())),
            ..Default::default()
        };
        let mut to_shadow = matching(variant_header, HeaderMatchSpecifier::StringMatch(exact));
        to_shadow.action = Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(shadow.to_owned())),
            ..Default::default()
        }));
        routes.push(to_shadow);
    }
    if let Some((mirror_to, policy)) = mirror {
        let mut copied = weighted(weights);
        copied.r#match = matching(mirror_to, HeaderMatchSpecifier::PresentMatch(true)).r#match;
        if let Some(Action::Route(action)) = copied.action.as_mut() {
            action.request_mirror_policies.push(policy);
        }
        routes.push(copied);
    }
    if let Some(pool) = pool {
        routes.push(pool_route(pool, weighted(weights)));
    }
    routes.push(weighted(weights));
    route_config(name, routes)
}

/// `route` limited to `pool`'s share of requests (`runtime_fraction`, with no runtime key: the
/// share is the filter's to know, not the runtime's to change) and enabling its filter (a
/// per-route `FilterConfig` with an empty `config`).
fn pool_route(pool: Pool<'_>, mut route: Route) -> Route {
    if let Some(m) = route.r#match.as_mut() {
        m.runtime_fraction = Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: pool.per_million,
                denominator: DenominatorType::Million as i32,
            }),
            runtime_key: String::new(),
        });
    }
    let enable = FilterConfig {
        config: Some(Any::default()),
        ..Default::default()
    };
    route
        .typed_per_filter_config
        .insert(pool.filter.to_owned(), pack(&enable));
    route
}

/// A route without action for every path of the requests whose `header` passes `test`.
fn matching(header: &str, test: HeaderMatchSpecifier) -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_owned())),
            headers: vec![HeaderMatcher {
                name: header.to_owned(),
                header_match_specifier: Some(test),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn weighted(weights: &[(&str, u32)]) -> Route {
    let clusters = weights
        .iter()
        .map(|(cluster, weight)| ClusterWeight {
            name: (*cluster).to_owned(),
            weight: Some(UInt32Value { value: *weight }),
            ..Default::default()
        })
        .collect();
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_owned())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters,
                ..Default::default()
            })),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn route_config(name: &str, routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_owned(),
            domains: vec!["*".to_owned()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}
