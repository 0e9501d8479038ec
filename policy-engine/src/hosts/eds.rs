//! Envoy EDS at the edge: a `ClusterLoadAssignment` becomes an [`Inventory`], and chosen hosts
//! become the shadow cluster's `ClusterLoadAssignment`.
//!
//! Labels come from each endpoint's `metadata.filter_metadata["doppel"]` (string, number and
//! bool values), on top of the locality's non-empty `region`, `zone` and `sub_zone`. The host id
//! is the metadata's `id` if given, else the endpoint's `hostname`, else `address:port`.

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::core::v3::{
    Address, Locality, Metadata, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value};

use super::{Host, HostsError, Inventory};

/// The `filter_metadata` key that holds doppel's host labels.
pub const METADATA_KEY: &str = "doppel";

/// The metadata field that names a host's id.
const ID_FIELD: &str = "id";

impl TryFrom<&ClusterLoadAssignment> for Inventory {
    type Error = HostsError;

    fn try_from(assignment: &ClusterLoadAssignment) -> Result<Self, HostsError> {
        let ClusterLoadAssignment {
            cluster_name,
            endpoints,
            named_endpoints: _,
            policy: _,
        } = assignment;
        let fail = |reason: String| HostsError::Eds {
            cluster: cluster_name.clone(),
            reason,
        };
        let mut hosts = Vec::new();
        for group in endpoints {
            let mut base = BTreeMap::new();
            if let Some(Locality {
                region,
                zone,
                sub_zone,
            }) = &group.locality
            {
                for (name, value) in [("region", region), ("zone", zone), ("sub_zone", sub_zone)] {
                    if !value.is_empty() {
                        base.insert(name.to_owned(), value.clone());
                    }
                }
            }
            for (index, lb) in group.lb_endpoints.iter().enumerate() {
                hosts.push(host_from_endpoint(lb, base.clone()).map_err(|reason| {
                    fail(format!(
                        "endpoint {index} of locality {:?}: {reason}",
                        group.locality
                    ))
                })?);
            }
        }
        Inventory::new(hosts).map_err(|e| fail(e.to_string()))
    }
}

/// One EDS endpoint as a host, with the locality's labels as a base.
fn host_from_endpoint(
    lb: &LbEndpoint,
    mut labels: BTreeMap<String, String>,
) -> Result<Host, String> {
    let endpoint = match &lb.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) => endpoint,
        Some(lb_endpoint::HostIdentifier::EndpointName(name)) => {
            return Err(format!("named endpoint {name:?} is not supported"));
        }
        None => return Err("no endpoint".to_owned()),
    };
    let socket = match endpoint.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(socket)) => socket,
        Some(other) => return Err(format!("address {other:?} is not a socket address")),
        None => return Err("no address".to_owned()),
    };
    let port = match &socket.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(port)) => u16::try_from(*port)
            .map_err(|_| format!("port {port} of {} is out of range", socket.address))?,
        Some(socket_address::PortSpecifier::NamedPort(name)) => {
            return Err(format!(
                "named port {name:?} of {} is not supported",
                socket.address
            ));
        }
        None => return Err(format!("address {} has no port", socket.address)),
    };
    let mut id = None;
    if let Some(fields) = lb
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get(METADATA_KEY))
    {
        for (name, value) in &fields.fields {
            let text = scalar_text(value).ok_or_else(|| {
                format!("metadata label {name:?} is not a string, number or bool")
            })?;
            if name == ID_FIELD {
                id = Some(text);
            } else {
                labels.insert(name.clone(), text);
            }
        }
    }
    let id = id.unwrap_or_else(|| {
        if endpoint.hostname.is_empty() {
            format!("{}:{port}", socket.address)
        } else {
            endpoint.hostname.clone()
        }
    });
    Ok(Host {
        id,
        address: socket.address.clone(),
        port,
        labels,
    })
}

/// A scalar protobuf value as label text; integers print without a fraction.
fn scalar_text(value: &Value) -> Option<String> {
    match value.kind.as_ref()? {
        value::Kind::StringValue(s) => Some(s.clone()),
        value::Kind::BoolValue(b) => Some(b.to_string()),
        value::Kind::NumberValue(n) if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e15 => {
            Some(format!("{}", *n as i64))
        }
        value::Kind::NumberValue(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `ClusterLoadAssignment` that makes `hosts` the endpoints of `cluster_name`: one locality
/// per distinct `region`/`zone`/`sub_zone`, each host's labels and id in its `doppel` metadata.
/// Converting it back with `Inventory::try_from` gives the same hosts.
pub fn to_cluster_load_assignment(cluster_name: &str, hosts: &[Host]) -> ClusterLoadAssignment {
    let mut localities: BTreeMap<[String; 3], Vec<LbEndpoint>> = BTreeMap::new();
    for host in hosts {
        let part = |name: &str| host.label(name).unwrap_or_default().to_owned();
        let key = [part("region"), part("zone"), part("sub_zone")];
        let mut fields: HashMap<String, Value> = host
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), string_value(v)))
            .collect();
        fields.insert(ID_FIELD.to_owned(), string_value(&host.id));
        let endpoint = Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: host.address.clone(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                        host.port,
                    ))),
                    ..Default::default()
                })),
            }),
            hostname: host.id.clone(),
            ..Default::default()
        };
        localities.entry(key).or_default().push(LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)),
            metadata: Some(Metadata {
                filter_metadata: HashMap::from([(METADATA_KEY.to_owned(), Struct { fields })]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_owned(),
        endpoints: localities
            .into_iter()
            .map(
                |([region, zone, sub_zone], lb_endpoints)| LocalityLbEndpoints {
                    locality: Some(Locality {
                        region,
                        zone,
                        sub_zone,
                    }),
                    lb_endpoints,
                    ..Default::default()
                },
            )
            .collect(),
        ..Default::default()
    }
}

fn string_value(text: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(text.to_owned())),
    }
}
