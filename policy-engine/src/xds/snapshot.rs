//! Immutable, versioned snapshots: every resource one Envoy node should have, by type.
//!
//! A snapshot is built once, checked for consistency ([`Snapshot::check`]) and then only shared
//! (`Arc`): every stream of a node sends the same packed bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use super::{Resource, ResourceType, SnapshotError};

/// The resources of one type in a snapshot, by name, with the snapshot version that last changed them.
#[derive(Debug, PartialEq)]
pub struct TypeResources {
    version: u64,
    items: BTreeMap<String, Resource>,
}

impl TypeResources {
    /// The snapshot version at which this type's content last changed (its `version_info`).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The resources, by name.
    pub fn items(&self) -> &BTreeMap<String, Resource> {
        &self.items
    }

    /// The resource called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Resource> {
        self.items.get(name)
    }

    /// The same content stamped with another version.
    pub(crate) fn restamped(&self, version: u64) -> TypeResources {
        TypeResources {
            version,
            items: self.items.clone(),
        }
    }
}

/// Everything one node should have: a version and, per type, its resources.
#[derive(Clone, Debug)]
pub struct Snapshot {
    version: u64,
    types: [Arc<TypeResources>; 5],
}

impl Snapshot {
    /// Starts a snapshot with this version (versions must grow per node).
    pub fn builder(version: u64) -> SnapshotBuilder {
        SnapshotBuilder {
            version,
            items: Default::default(),
            error: None,
        }
    }

    /// The snapshot's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The resources of one type.
    pub fn resources(&self, kind: ResourceType) -> &Arc<TypeResources> {
        &self.types[kind.index()]
    }

    /// Checks that every reference resolves inside the snapshot: every route's clusters exist,
    /// every EDS cluster has endpoints, every listener's route configuration and ADS-served
    /// filter configs exist. Returns the first broken reference.
    pub fn check(&self) -> Result<(), SnapshotError> {
        for kind in ResourceType::ALL {
            for resource in self.resources(kind).items.values() {
                for reference in resource.references() {
                    if self
                        .resources(reference.kind)
                        .get(&reference.name)
                        .is_none()
                    {
                        return Err(SnapshotError::Dangling {
                            kind,
                            name: resource.name().to_owned(),
                            missing_kind: reference.kind,
                            missing: reference.name.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// This snapshot under a new version, where each type whose content equals `previous`'s
    /// keeps `previous`'s shared copy (and so its version: streams do not resend it).
    pub(crate) fn sharing_unchanged(self, previous: Option<&Snapshot>) -> Snapshot {
        let Some(previous) = previous else {
            return self;
        };
        let types = ResourceType::ALL.map(|kind| {
            let new = self.resources(kind);
            let old = previous.resources(kind);
            if new.items == old.items {
                Arc::clone(old)
            } else {
                Arc::clone(new)
            }
        });
        Snapshot {
            version: self.version,
            types,
        }
    }

    /// This snapshot under `version`, with `kind` replaced by `resources` restamped to `version`.
    pub(crate) fn with_type(&self, kind: ResourceType, resources: &TypeResources) -> Snapshot {
        let mut types = self.types.clone();
        types[kind.index()] = Arc::new(resources.restamped(self.version));
        Snapshot {
            version: self.version,
            types,
        }
    }

    /// The same resources under a new snapshot version; each type keeps its own version.
    pub(crate) fn renumbered(&self, version: u64) -> Snapshot {
        Snapshot {
            version,
            types: self.types.clone(),
        }
    }
}

/// Collects resources for a [`Snapshot`]; packing errors surface at [`SnapshotBuilder::build`].
#[derive(Debug)]
pub struct SnapshotBuilder {
    version: u64,
    items: [BTreeMap<String, Resource>; 5],
    error: Option<SnapshotError>,
}

impl SnapshotBuilder {
    /// Adds a cluster (CDS).
    pub fn cluster(self, cluster: &Cluster) -> Self {
        self.resource(Resource::cluster(cluster))
    }

    /// Adds a cluster load assignment (EDS).
    pub fn endpoints(self, assignment: &ClusterLoadAssignment) -> Self {
        self.resource(Resource::endpoints(assignment))
    }

    /// Adds a listener (LDS).
    pub fn listener(self, listener: &Listener) -> Self {
        self.resource(Resource::listener(listener))
    }

    /// Adds a route configuration (RDS).
    pub fn route(self, route: &RouteConfiguration) -> Self {
        self.resource(Resource::route(route))
    }

    /// Adds an extension config (ECDS), named like the filter it configures.
    pub fn extension_config(self, config: &TypedExtensionConfig) -> Self {
        self.resource(Resource::extension_config(config))
    }

    /// Adds an already packed resource.
    pub fn resource(mut self, resource: Result<Resource, SnapshotError>) -> Self {
        if self.error.is_some() {
            return self;
        }
        match resource {
            Ok(resource) => {
                let slot = &mut self.items[resource.kind().index()];
                if slot.contains_key(resource.name()) {
                    self.error = Some(SnapshotError::Duplicate {
                        kind: resource.kind(),
                        name: resource.name().to_owned(),
                    });
                } else {
                    slot.insert(resource.name().to_owned(), resource);
                }
            }
            Err(error) => self.error = Some(error),
        }
        self
    }

    /// The snapshot, or the first error met while adding resources. Consistency is checked
    /// when the snapshot is set (and by [`Snapshot::check`]).
    pub fn build(self) -> Result<Snapshot, SnapshotError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let version = self.version;
        Ok(Snapshot {
            version,
            types: self
                .items
                .map(|items| Arc::new(TypeResources { version, items })),
        })
    }
}
