//! Where Mixer policy can apply, read from Mixer's kinds in the config
//! directory. Mixer's default config namespace (`istio-system`) holds rules
//! for every namespace; a rule elsewhere applies to its own namespace only.

use api::config::OtherDocument;

/// Mixer's namespace for mesh-wide rules, as `mixs --configDefaultNamespace`.
pub const MIXER_DEFAULT_NAMESPACE: &str = "istio-system";

pub fn is_mixer_kind(doc: &OtherDocument) -> bool {
    doc.api_version.starts_with("config.istio.io/")
        || doc.api_version.starts_with("policy.istio.io/")
}

/// The namespaces `doc` makes policy apply to.
pub fn namespaces(doc: &OtherDocument) -> Vec<String> {
    let own = doc
        .value
        .pointer("/metadata/namespace")
        .and_then(|v| v.as_str())
        .filter(|ns| !ns.is_empty())
        .unwrap_or(MIXER_DEFAULT_NAMESPACE)
        .to_string();
    match doc.kind.as_str() {
        "rule" => vec![own],
        "QuotaSpecBinding" => {
            let services = doc
                .value
                .pointer("/spec/services")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            services
                .iter()
                .map(|s| {
                    let text = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("");
                    match (text("namespace"), text("service")) {
                        // `*` binds every service: as mesh-wide as a default-namespace rule.
                        (_, "*") => MIXER_DEFAULT_NAMESPACE.to_string(),
                        ("", host) if !host.is_empty() => {
                            host.split('.').nth(1).unwrap_or(own.as_str()).to_string()
                        }
                        ("", _) => own.clone(),
                        (ns, _) => ns.to_string(),
                    }
                })
                .collect()
        }
        _ => Vec::new(),
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

    #[test]
    fn rules_and_bindings_name_their_namespaces() {
        let rule = doc(
            "rule",
            serde_json::json!({"metadata": {"name": "r", "namespace": "shop"}}),
        );
        assert_eq!(namespaces(&rule), ["shop"]);
        let rule = doc("rule", serde_json::json!({"metadata": {"name": "r"}}));
        assert_eq!(namespaces(&rule), [MIXER_DEFAULT_NAMESPACE]);
        let binding = doc(
            "QuotaSpecBinding",
            serde_json::json!({"metadata": {"name": "b", "namespace": "istio-system"},
                "spec": {"services": [{"name": "ratings", "namespace": "default"},
                                      {"service": "reviews.shop.svc.cluster.local"}]}}),
        );
        assert_eq!(namespaces(&binding), ["default", "shop"]);
        assert!(namespaces(&doc("handler", serde_json::json!({}))).is_empty());
    }
}
