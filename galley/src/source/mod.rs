//! Where config comes from: a watched directory ([`dir`]) or the Kubernetes
//! API server ([`kube`]). Each source checks every object and hands
//! [`assemble`] what it found; the snapshot it publishes holds valid
//! objects only.

pub mod dir;
pub mod kube;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio::sync::watch;

use api::config::ConfigError;

use crate::snapshot::Snapshot;
use crate::validate::{self, Checked, Resource};

type Key = (&'static str, String);

const LAST_GOOD: &str = "; the last good version stays in force";

/// Builds the next snapshot from every object a source holds, in the
/// source's order. An object that is invalid now but was valid before keeps
/// its last good version, so a bad edit never takes a working route (or an
/// opened door) away from the proxies; an object that is gone is gone.
/// Mixer's objects are valid only together (a rule needs its handler), so
/// they are checked again with the last good versions in, until what is
/// served compiles as a whole.
pub fn assemble(checked: Vec<Checked>, previous: &Snapshot) -> Snapshot {
    let mut errors = Vec::new();
    let mut resources: BTreeMap<Key, Resource> = BTreeMap::new();
    // Refused objects, by key: the index of their first error.
    let mut refused: BTreeMap<Key, usize> = BTreeMap::new();
    for c in checked {
        match c {
            Checked::Valid(r) => {
                let key = (r.collection.name, r.key());
                if resources.contains_key(&key) {
                    errors.push(ConfigError {
                        object: r.label(),
                        field: "metadata.name".into(),
                        message: "defined more than once; the first one read is served".into(),
                    });
                    continue;
                }
                resources.insert(key, *r);
            }
            Checked::Invalid { key, errors: found } => {
                if let Some(key) = key {
                    refused.entry(key).or_insert(errors.len());
                }
                errors.extend(found);
            }
            Checked::Other => {}
        }
    }
    // Keys brought back to their last good version: the error noting it.
    let mut restored: BTreeMap<Key, usize> = BTreeMap::new();
    let restore = |key: Key,
                   at: usize,
                   resources: &mut BTreeMap<Key, Resource>,
                   errors: &mut Vec<ConfigError>,
                   restored: &mut BTreeMap<Key, usize>| {
        if let Some(last) = previous.get(key.0, &key.1) {
            resources.insert(key.clone(), last.resource.clone());
            errors[at].message.push_str(LAST_GOOD);
            restored.insert(key, at);
        }
    };
    for (key, at) in refused {
        if !resources.contains_key(&key) {
            restore(key, at, &mut resources, &mut errors, &mut restored);
        }
    }
    loop {
        let mixer_errors = validate::check_mixer(&resources.values().collect::<Vec<_>>());
        let bad: HashSet<&str> = mixer_errors.iter().map(|e| e.object.as_str()).collect();
        let failed: Vec<Key> = resources
            .iter()
            .filter(|(_, r)| r.typed.is_none() && bad.contains(r.label().as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        if failed.is_empty() {
            errors.extend(mixer_errors);
            break;
        }
        for key in failed {
            let Some(resource) = resources.remove(&key) else {
                continue;
            };
            let label = resource.label();
            let at = errors.len();
            errors.extend(mixer_errors.iter().filter(|e| e.object == label).cloned());
            match restored.get(&key) {
                // Its last good version does not compile with the rest any more.
                Some(&note) => {
                    let message = &mut errors[note].message;
                    message.truncate(message.len() - LAST_GOOD.len());
                    message.push_str("; its last good version is refused too");
                }
                None if previous
                    .get(key.0, &key.1)
                    .is_some_and(|last| last.resource != resource) =>
                {
                    restore(key, at, &mut resources, &mut errors, &mut restored);
                }
                None => {}
            }
        }
    }
    let typed: Vec<&api::config::ConfigObject> = resources
        .values()
        .filter_map(|r| r.typed.as_deref())
        .collect();
    let warnings = api::analysis::analyze(&typed, None);
    Snapshot::build(
        resources.into_values().collect(),
        errors,
        warnings,
        previous,
    )
}

/// Swaps in `next` when it differs, and says what changed.
pub fn publish(out: &watch::Sender<Arc<Snapshot>>, next: Snapshot) {
    for e in &next.errors {
        tracing::warn!(object = %e.object, field = %e.field, "config rejected: {}", e.message);
    }
    out.send_if_modified(|current| {
        if **current == next {
            return false;
        }
        tracing::info!(
            resources = next.len(),
            rejected = next.errors.len(),
            warnings = next.warnings.len(),
            "config snapshot updated"
        );
        *current = Arc::new(next);
        true
    });
}
