//! The two wire variants of ADS: state of the world and delta. Requests become
//! [`Incoming`] here, and nowhere else; responses are built here from shared, packed resources.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as WireResource,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;

use super::TypeResources;
use super::stream::{Incoming, Interest, Protocol, Subscription};

/// State-of-the-world ADS (`StreamAggregatedResources`, Envoy `api_type: GRPC`).
pub(crate) struct Sotw;

/// Delta ADS (`DeltaAggregatedResources`, Envoy `api_type: DELTA_GRPC`).
pub(crate) struct Delta;

fn rejection(error_detail: Option<RpcStatus>) -> Option<String> {
    error_detail.map(|status| {
        if status.message.is_empty() {
            format!("rejected with gRPC code {}", status.code)
        } else {
            status.message
        }
    })
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    fn incoming(request: DiscoveryRequest) -> Incoming {
        let DiscoveryRequest {
            version_info: _,
            node,
            resource_names,
            resource_locators: _,
            type_url,
            response_nonce,
            error_detail,
        } = request;
        Incoming {
            node: node.map(|node| node.id),
            type_url,
            nonce: response_nonce,
            error: rejection(error_detail),
            interest: Interest::Replace(resource_names),
        }
    }

    fn respond(
        sub: &mut Subscription,
        resources: &Arc<TypeResources>,
        nonce: &str,
    ) -> Option<DiscoveryResponse> {
        let stale = sub
            .sent
            .as_ref()
            .is_none_or(|sent| sent.version() != resources.version());
        if !(stale || sub.changed) {
            return None;
        }
        let packed: Vec<_> = sub.wanted(resources).map(|r| r.any().clone()).collect();
        // Named types (EDS, RDS, ECDS) do not signal removal by absence: an empty answer
        // would say nothing, so wait until a wanted resource exists.
        if packed.is_empty() && !sub.wildcard {
            return None;
        }
        sub.sent = Some(Arc::clone(resources));
        Some(DiscoveryResponse {
            version_info: resources.version().to_string(),
            resources: packed,
            type_url: sub.kind.type_url().to_owned(),
            nonce: nonce.to_owned(),
            ..Default::default()
        })
    }
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn incoming(request: DeltaDiscoveryRequest) -> Incoming {
        let DeltaDiscoveryRequest {
            node,
            type_url,
            resource_names_subscribe,
            resource_names_unsubscribe,
            resource_locators_subscribe: _,
            resource_locators_unsubscribe: _,
            initial_resource_versions,
            response_nonce,
            error_detail,
        } = request;
        Incoming {
            node: node.map(|node| node.id),
            type_url,
            nonce: response_nonce,
            error: rejection(error_detail),
            interest: Interest::Change {
                subscribe: resource_names_subscribe,
                unsubscribe: resource_names_unsubscribe,
                held: initial_resource_versions,
            },
        }
    }

    fn respond(
        sub: &mut Subscription,
        resources: &Arc<TypeResources>,
        nonce: &str,
    ) -> Option<DeltaDiscoveryResponse> {
        let updated: Vec<WireResource> = sub
            .wanted(resources)
            .filter(|r| sub.held.get(r.name()).map(String::as_str) != Some(r.version()))
            .map(|r| WireResource {
                name: r.name().to_owned(),
                version: r.version().to_owned(),
                resource: Some(r.any().clone()),
                ..Default::default()
            })
            .collect();
        let mut removed: Vec<String> = sub
            .held
            .keys()
            .filter(|name| resources.get(name).is_none())
            .filter(|name| sub.wildcard || sub.names.contains(*name))
            .cloned()
            .collect();
        removed.sort();
        // A wildcard subscriber waits for a first answer, even an empty one, to finish its init.
        let first_wildcard = sub.wildcard && !sub.answered;
        if updated.is_empty() && removed.is_empty() && !first_wildcard {
            return None;
        }
        for resource in &updated {
            sub.held
                .insert(resource.name.clone(), resource.version.clone());
        }
        for name in &removed {
            sub.held.remove(name);
        }
        Some(DeltaDiscoveryResponse {
            system_version_info: resources.version().to_string(),
            resources: updated,
            type_url: sub.kind.type_url().to_owned(),
            removed_resources: removed,
            nonce: nonce.to_owned(),
            ..Default::default()
        })
    }
}
