//! Where Mixer policy can apply, read from Mixer's kinds in the config
//! directory. Mixer's default config namespace (`istio-system`) holds rules
//! for every namespace; a rule elsewhere applies to its own namespace only.
//! Only rules that check, allocate quota or change headers count: Istio's
//! telemetry rules (prometheus, stdio, …) never need a policy check.

use std::collections::{BTreeMap, BTreeSet};

use api::config::OtherDocument;
use mixer::config::resolve;
use mixer::template::{Template, Variety};

/// Mixer's namespace for mesh-wide rules, as `mixs --configDefaultNamespace`.
pub const MIXER_DEFAULT_NAMESPACE: &str = "istio-system";

pub fn is_mixer_kind(doc: &OtherDocument) -> bool {
    doc.api_version.starts_with("config.istio.io/")
        || doc.api_version.starts_with("policy.istio.io/")
}

/// The Mixer objects Pilot needs to judge where policy applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MixerObjects {
    rules: Vec<RuleRef>,
    /// Instance full names to their template names.
    instances: BTreeMap<String, String>,
    /// Namespaces of services that `QuotaSpecBinding`s bind.
    bound: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct RuleRef {
    namespace: String,
    instances: Vec<String>,
    changes_headers: bool,
}

impl MixerObjects {
    pub fn extend(&mut self, other: &MixerObjects) {
        self.rules.extend(other.rules.iter().cloned());
        self.instances
            .extend(other.instances.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.bound.extend(other.bound.iter().cloned());
    }

    /// Notes one Mixer document.
    pub fn note(&mut self, doc: &OtherDocument) {
        let text = |pointer: &str| doc.value.pointer(pointer).and_then(|v| v.as_str());
        let name = text("/metadata/name").unwrap_or_default();
        let namespace = text("/metadata/namespace")
            .filter(|ns| !ns.is_empty())
            .unwrap_or(MIXER_DEFAULT_NAMESPACE)
            .to_string();
        let list = |pointer: &str| {
            doc.value
                .pointer(pointer)
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default()
        };
        match doc.kind.as_str() {
            "rule" => {
                let instances = list("/spec/actions")
                    .iter()
                    .flat_map(|a| a.get("instances").and_then(|i| i.as_array()).cloned())
                    .flatten()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect();
                let changes_headers = !list("/spec/requestHeaderOperations").is_empty()
                    || !list("/spec/responseHeaderOperations").is_empty();
                self.rules.push(RuleRef {
                    namespace,
                    instances,
                    changes_headers,
                });
            }
            "instance" => {
                let template = text("/spec/compiledTemplate")
                    .or_else(|| text("/spec/template"))
                    .unwrap_or_default();
                let template = template.split('.').next().unwrap_or_default();
                self.instances
                    .insert(format!("{name}.instance.{namespace}"), template.to_string());
            }
            kind if Template::parse(kind).is_some() => {
                self.instances
                    .insert(format!("{name}.{kind}.{namespace}"), kind.to_string());
            }
            "QuotaSpecBinding" => {
                for s in list("/spec/services") {
                    let field = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("");
                    let ns = match (field("namespace"), field("service")) {
                        // `*` binds every service: as mesh-wide as a default-namespace rule.
                        (_, "*") => MIXER_DEFAULT_NAMESPACE,
                        ("", host) if !host.is_empty() => {
                            host.split('.').nth(1).unwrap_or(&namespace)
                        }
                        ("", _) => &namespace,
                        (ns, _) => ns,
                    };
                    self.bound.insert(ns.to_string());
                }
            }
            _ => {}
        }
    }

    /// The namespaces where some check, quota or header change can apply.
    pub fn policy_namespaces(&self) -> BTreeSet<String> {
        let mut out = self.bound.clone();
        for rule in &self.rules {
            if rule.changes_headers
                || rule
                    .instances
                    .iter()
                    .any(|i| self.checks(i, &rule.namespace))
            {
                out.insert(rule.namespace.clone());
            }
        }
        out
    }

    /// Whether an instance a rule names is a check or quota one. One that
    /// cannot be found counts: better a check that finds nothing to do than
    /// policy silently skipped.
    fn checks(&self, reference: &str, namespace: &str) -> bool {
        let found = resolve(reference, "instance", namespace)
            .iter()
            .find_map(|n| self.instances.get(n));
        match found.and_then(|t| Template::parse(t)) {
            Some(t) => t.variety() != Variety::Report,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(kind: &str, value: serde_json::Value) -> OtherDocument {
        OtherDocument {
            api_version: "config.istio.io/v1alpha2".into(),
            kind: kind.into(),
            value,
        }
    }

    fn scope(docs: &[OtherDocument]) -> Vec<String> {
        let mut objects = MixerObjects::default();
        for d in docs {
            objects.note(d);
        }
        objects.policy_namespaces().into_iter().collect()
    }

    #[test]
    fn check_rules_count_and_telemetry_rules_do_not() {
        let metric = doc(
            "instance",
            serde_json::json!({"metadata": {"name": "requestcount", "namespace": "istio-system"},
                "spec": {"compiledTemplate": "metric"}}),
        );
        let telemetry = doc(
            "rule",
            serde_json::json!({"metadata": {"name": "promhttp", "namespace": "istio-system"},
                "spec": {"actions": [{"handler": "prometheus", "instances": ["requestcount"]}]}}),
        );
        assert!(scope(&[metric.clone(), telemetry.clone()]).is_empty());

        let deny = doc(
            "checknothing",
            serde_json::json!({"metadata": {"name": "denyrequest", "namespace": "shop"}}),
        );
        let policy = doc(
            "rule",
            serde_json::json!({"metadata": {"name": "deny", "namespace": "shop"},
                "spec": {"actions": [{"handler": "denyall.denier", "instances": ["denyrequest.checknothing"]}]}}),
        );
        assert_eq!(scope(&[metric, telemetry, deny, policy]), ["shop"]);

        // An instance Pilot cannot find counts, as do header changes.
        let unknown = doc(
            "rule",
            serde_json::json!({"metadata": {"name": "r"},
                "spec": {"actions": [{"handler": "h", "instances": ["elsewhere"]}]}}),
        );
        assert_eq!(scope(&[unknown]), [MIXER_DEFAULT_NAMESPACE]);
        let headers = doc(
            "rule",
            serde_json::json!({"metadata": {"name": "r", "namespace": "web"},
                "spec": {"requestHeaderOperations": [{"name": "x", "values": ["\"y\""]}]}}),
        );
        assert_eq!(scope(&[headers]), ["web"]);
    }

    #[test]
    fn quota_bindings_name_their_services_namespaces() {
        let binding = doc(
            "QuotaSpecBinding",
            serde_json::json!({"metadata": {"name": "b", "namespace": "istio-system"},
                "spec": {"services": [{"name": "ratings", "namespace": "default"},
                                      {"service": "reviews.shop.svc.cluster.local"}]}}),
        );
        assert_eq!(scope(&[binding]), ["default", "shop"]);
    }
}
