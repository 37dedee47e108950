//! What Galley distributes: every valid resource, encoded once into its MCP
//! body, by collection. A snapshot is immutable; sources build a new one on
//! each change, reusing the encoded entries of unchanged objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use api::config::ConfigError;
use api::mcp::v1alpha1::{Metadata, Resource as McpResource};
use xxhash_rust::xxh3::Xxh3;

use crate::validate::Resource;

/// One resource, ready to send.
#[derive(Debug, PartialEq)]
pub struct Entry {
    pub resource: Arc<Resource>,
    /// A digest of body and metadata: unchanged objects keep their version
    /// across reloads and Galley restarts.
    pub version: String,
    pub mcp: McpResource,
}

#[derive(Debug, Default, PartialEq)]
pub struct CollectionState {
    /// A digest of every entry's name and version.
    pub version: String,
    pub entries: BTreeMap<String, Arc<Entry>>,
}

#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    pub collections: BTreeMap<&'static str, CollectionState>,
    /// Objects refused (by validation, or because they would not encode).
    pub errors: Vec<ConfigError>,
    /// Cross-object findings that do not stop distribution.
    pub warnings: Vec<ConfigError>,
}

impl Snapshot {
    /// Encodes `resources` (valid, one per collection and key), reusing
    /// `previous`'s entries for objects that did not change.
    pub fn build(
        resources: Vec<Arc<Resource>>,
        mut errors: Vec<ConfigError>,
        warnings: Vec<ConfigError>,
        previous: &Snapshot,
    ) -> Snapshot {
        let mut collections: BTreeMap<&'static str, CollectionState> = api::mcp::COLLECTIONS
            .iter()
            .map(|c| (c.name, CollectionState::default()))
            .collect();
        for resource in resources {
            let key = resource.key();
            let reused = previous
                .collections
                .get(resource.collection.name)
                .and_then(|c| c.entries.get(&key))
                // The source's own Arc when the file did not change.
                .filter(|e| Arc::ptr_eq(&e.resource, &resource) || e.resource == resource)
                .cloned();
            let entry = match reused {
                Some(e) => e,
                None => match encode(resource) {
                    Ok(e) => Arc::new(e),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            if let Some(state) = collections.get_mut(entry.resource.collection.name) {
                state.entries.insert(key, entry);
            }
        }
        for state in collections.values_mut() {
            let mut h = Xxh3::new();
            for (key, entry) in &state.entries {
                h.update(key.as_bytes());
                h.update(entry.version.as_bytes());
            }
            state.version = format!("{:016x}", h.digest());
        }
        Snapshot {
            collections,
            errors,
            warnings,
        }
    }

    /// Whether `other` serves the same: collection versions digest every
    /// entry's name and version, so this is cheap where `==` would compare
    /// every object.
    pub fn serves_the_same(&self, other: &Snapshot) -> bool {
        self.errors == other.errors
            && self.warnings == other.warnings
            && self.collections.len() == other.collections.len()
            && self
                .collections
                .iter()
                .zip(&other.collections)
                .all(|((a, x), (b, y))| a == b && x.version == y.version)
    }

    pub fn len(&self) -> usize {
        self.collections.values().map(|c| c.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, collection: &str, key: &str) -> Option<&Arc<Entry>> {
        self.collections.get(collection)?.entries.get(key)
    }

    /// Every resource, whatever its collection.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.collections
            .values()
            .flat_map(|c| c.entries.values().map(|e| e.resource.as_ref()))
    }
}

fn encode(resource: Arc<Resource>) -> Result<Entry, ConfigError> {
    let body =
        api::mcp::encode(resource.collection, &resource.spec).map_err(|message| ConfigError {
            object: resource.label(),
            field: "spec".into(),
            message: format!(
                "cannot be encoded as {}: {message}",
                resource.collection.message
            ),
        })?;
    let mut h = Xxh3::new();
    h.update(&body.value);
    for (k, v) in resource.labels.iter().chain(&resource.annotations) {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    let version = format!("{:016x}", h.digest());
    let mcp = McpResource {
        metadata: Some(Metadata {
            name: resource.key(),
            create_time: None,
            version: version.clone(),
            labels: resource.labels.clone().into_iter().collect(),
            annotations: resource.annotations.clone().into_iter().collect(),
        }),
        body: Some(body),
    };
    Ok(Entry {
        resource,
        version,
        mcp,
    })
}
