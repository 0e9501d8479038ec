//! Which Envoy cluster serves which (service, variant), so that a service can be judged on
//! Envoy's own per-cluster stats even without the filter's.

use std::collections::BTreeMap;

use doppel_filter::names::Variant;

/// The caller's map from Envoy cluster name to the (service, variant) it serves.
///
/// A service with at least one cluster here takes its request, error, reset and latency counts
/// from Envoy's cluster stats, and the filter's per-variant counts for it are ignored, so no
/// request is counted twice. The filter's mirror and custom metrics are read either way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterRegistry {
    clusters: BTreeMap<String, (String, Variant)>,
}

impl ClusterRegistry {
    /// An empty registry: every service is judged on the filter's stats.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `cluster` to `variant` of `service`, replacing an earlier mapping of that cluster.
    ///
    /// ```
    /// use doppel_engine::ingest::ClusterRegistry;
    /// use doppel_filter::names::Variant;
    /// let registry = ClusterRegistry::new()
    ///     .with("cart_v1", "cart", Variant::Primary)
    ///     .with("cart_v2", "cart", Variant::Shadow);
    /// assert_eq!(registry.lookup("cart_v2"), Some(("cart", Variant::Shadow)));
    /// assert!(registry.judges_by_cluster("cart"));
    /// ```
    pub fn with(mut self, cluster: &str, service: &str, variant: Variant) -> Self {
        self.insert(cluster, service, variant);
        self
    }

    /// Maps `cluster` to `variant` of `service`, replacing an earlier mapping of that cluster.
    pub fn insert(&mut self, cluster: &str, service: &str, variant: Variant) {
        self.clusters
            .insert(cluster.to_owned(), (service.to_owned(), variant));
    }

    /// The (service, variant) a cluster serves, if mapped.
    pub fn lookup(&self, cluster: &str) -> Option<(&str, Variant)> {
        self.clusters
            .get(cluster)
            .map(|(service, variant)| (service.as_str(), *variant))
    }

    /// True when `service` takes its request counts from Envoy's cluster stats.
    pub fn judges_by_cluster(&self, service: &str) -> bool {
        self.clusters.values().any(|(s, _)| s == service)
    }
}
