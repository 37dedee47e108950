//! The shipped manifests: they parse strictly as Kubernetes objects, and the
//! webhook's namespace selector picks the namespaces the docs promise.

use std::collections::BTreeMap;

use injector::policy::Selector;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const MANIFESTS: &str = include_str!("../../deploy/injector/mutatingwebhook.yaml");

fn strict<T: DeserializeOwned + serde::Serialize>(doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(
        &serde_json::to_value(&typed).unwrap(),
        doc,
        "fields Kubernetes does not know"
    );
    typed
}

fn documents() -> Vec<Value> {
    serde_yaml::Deserializer::from_str(MANIFESTS)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

#[test]
fn the_webhook_selects_labelled_namespaces_and_never_the_system_ones() {
    let docs = documents();
    assert_eq!(docs.len(), 3);
    let config: MutatingWebhookConfiguration = strict(&docs[0]);
    let _: Service = strict(&docs[1]);
    let _: Deployment = strict(&docs[2]);
    let webhook = &config.webhooks.unwrap()[0];
    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(
        webhook
            .client_config
            .service
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/inject")
    );
    let namespaces = Selector::new(webhook.namespace_selector.as_ref().unwrap()).unwrap();
    let ns = |name: &str, label: Option<&str>| {
        let mut labels =
            BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())]);
        if let Some(v) = label {
            labels.insert("istio-injection".into(), v.into());
        }
        namespaces.matches(&labels)
    };
    assert!(ns("shop", Some("enabled")));
    assert!(!ns("shop", Some("disabled")));
    assert!(!ns("shop", None));
    for system in ["kube-system", "kube-public", "istio-system"] {
        assert!(!ns(system, Some("enabled")), "{system}");
    }
    let pods = Selector::new(webhook.object_selector.as_ref().unwrap()).unwrap();
    assert!(pods.matches(&BTreeMap::new()));
    assert!(!pods.matches(&BTreeMap::from([(
        "sidecar.istio.io/inject".into(),
        "false".into()
    )])));
}
