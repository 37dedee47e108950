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
    let mut resources: BTreeMap<Key, Arc<Resource>> = BTreeMap::new();
    // Refused objects, by key: the index of their first error.
    let mut refused: BTreeMap<Key, usize> = BTreeMap::new();
    let mut workloads = Vec::new();
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
                resources.insert(key, r);
            }
            Checked::Invalid { key, errors: found } => {
                if let Some(key) = key {
                    refused.entry(key).or_insert(errors.len());
                }
                errors.extend(found);
            }
            Checked::Workload(labels) => workloads.push(labels),
            Checked::Other => {}
        }
    }
    // Keys brought back to their last good version: the error noting it.
    let mut restored: BTreeMap<Key, usize> = BTreeMap::new();
    let restore = |key: Key,
                   at: usize,
                   resources: &mut BTreeMap<Key, Arc<Resource>>,
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
        let mixer_errors =
            validate::check_mixer(&resources.values().map(Arc::as_ref).collect::<Vec<_>>());
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
    // Gateway selectors are judged only where the source knows the Pods.
    let known = (!workloads.is_empty()).then_some(workloads.as_slice());
    let warnings = api::analysis::analyze(&typed, known);
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
        if current.serves_the_same(&next) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::check_text;

    fn assemble_text(text: &str, previous: &Snapshot) -> Snapshot {
        assemble(check_text("t.yaml", text), previous)
    }

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n";

    fn pod(labels: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: istio-system, labels: {labels}}}\nspec: {{}}\n---\n"
        )
    }

    #[test]
    fn gateway_selectors_are_checked_against_the_pods_beside_them() {
        let unknown = assemble_text(GATEWAY, &Snapshot::default());
        assert!(unknown.warnings.is_empty(), "no Pods known: no verdict");
        let none = assemble_text(
            &format!("{GATEWAY}{}", pod("{app: x}")),
            &Snapshot::default(),
        );
        assert_eq!(none.warnings.len(), 1, "{:?}", none.warnings);
        assert!(
            none.warnings[0]
                .to_string()
                .starts_with("Gateway default/web: spec.selector"),
            "{}",
            none.warnings[0]
        );
        let found = assemble_text(
            &format!("{GATEWAY}{}", pod("{istio: ingressgateway}")),
            &Snapshot::default(),
        );
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    }

    const HANDLER: &str = "apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: denyall, namespace: istio-system}\nspec: {compiledAdapter: denier}\n---\napiVersion: config.istio.io/v1alpha2\nkind: instance\nmetadata: {name: nothing, namespace: istio-system}\nspec: {compiledTemplate: checknothing}\n---\n";
    const RULE: &str = "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: deny, namespace: istio-system}\nspec:\n  match: request.headers[\"x-user\"] == \"mallory\"\n  actions: [{handler: denyall, instances: [nothing]}]\n---\n";
    const RULES: &str = "istio/policy/v1beta1/rules";

    #[test]
    fn a_bad_edit_keeps_the_last_good_rule_until_it_no_longer_compiles() {
        let good = assemble_text(&format!("{HANDLER}{RULE}"), &Snapshot::default());
        assert!(good.errors.is_empty(), "{:?}", good.errors);
        // A typo in the rule: the deny stays in force, the error says so.
        let typo = assemble_text(&format!("{HANDLER}{}", RULE.replace("==", "=")), &good);
        let deny = typo
            .get(RULES, "istio-system/deny")
            .expect("last good rule");
        assert_eq!(
            deny.resource.spec["match"],
            "request.headers[\"x-user\"] == \"mallory\""
        );
        assert!(
            typo.errors[0]
                .message
                .ends_with("the last good version stays in force"),
            "{:?}",
            typo.errors
        );
        // The handler it names is gone too: the last good rule no longer
        // compiles and is refused as well, never served broken.
        let gone = assemble_text(&RULE.replace("==", "="), &typo);
        assert!(gone.get(RULES, "istio-system/deny").is_none());
        assert!(
            gone.errors
                .iter()
                .any(|e| e.message.ends_with("its last good version is refused too")),
            "{:?}",
            gone.errors
        );
    }
}
