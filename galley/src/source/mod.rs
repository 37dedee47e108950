//! Where config comes from: a watched directory ([`dir`]) or the Kubernetes
//! API server ([`kube`]). Each source checks every object and hands
//! [`assemble`] what it found; the snapshot it publishes holds valid
//! objects only.

pub mod dir;
pub mod kube;

use std::collections::{BTreeMap, HashSet};

use api::config::ConfigError;

use crate::snapshot::Snapshot;
use crate::validate::{self, Checked, Resource};

/// Builds the next snapshot from every object a source holds, in the
/// source's order. An object that is invalid now but was valid before keeps
/// its last good version, so a bad edit never takes a working route (or an
/// opened door) away from the proxies; an object that is gone is gone.
pub fn assemble(checked: Vec<Checked>, previous: &Snapshot) -> Snapshot {
    let mut errors = Vec::new();
    let mut resources: BTreeMap<(&'static str, String), Resource> = BTreeMap::new();
    let mut refused: Vec<((&'static str, String), usize)> = Vec::new();
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
                    refused.push((key, errors.len()));
                }
                errors.extend(found);
            }
            Checked::Other => {}
        }
    }
    let mixer_errors = {
        let all: Vec<&Resource> = resources.values().collect();
        validate::check_mixer(&all)
    };
    if !mixer_errors.is_empty() {
        let bad: HashSet<&str> = mixer_errors.iter().map(|e| e.object.as_str()).collect();
        let failed: Vec<(&'static str, String)> = resources
            .iter()
            .filter(|(_, r)| r.typed.is_none() && bad.contains(r.label().as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in failed {
            resources.remove(&key);
            let label = resources_label(&key);
            if let Some(e) = mixer_errors.iter().position(|e| e.object == label) {
                refused.push((key, errors.len() + e));
            }
        }
        errors.extend(mixer_errors);
    }
    for (key, error) in refused {
        if resources.contains_key(&key) {
            continue;
        }
        if let Some(last_good) = previous.get(key.0, &key.1) {
            resources.insert(key, last_good.resource.clone());
            errors[error]
                .message
                .push_str("; the last good version stays in force");
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

/// How [`Resource::label`] names the object under `key`.
fn resources_label(key: &(&'static str, String)) -> String {
    let kind = api::mcp::collection(key.0).map_or("", |c| c.kind);
    format!("{kind} {}", key.1)
}
