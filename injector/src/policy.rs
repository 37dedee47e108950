//! Whether a Pod gets a sidecar, in Istio 1.4's order: host-network Pods and
//! the system namespaces never; then the Pod's own `sidecar.istio.io/inject`
//! annotation; then `neverInjectSelector`, `alwaysInjectSelector`; then the
//! config's policy. Namespaces are chosen before the webhook is called, by
//! the webhook configuration's `namespaceSelector` (`istio-injection`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::config::{Config, Policy};
use crate::{INJECT_ANNOTATION, STATUS_ANNOTATION};

const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(&'static str),
}

/// What the decision reads of a Pod.
pub struct PodFacts<'a> {
    pub namespace: &'a str,
    pub host_network: bool,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
}

pub fn decide(config: &Config, pod: &PodFacts) -> Decision {
    if pod.host_network {
        return Decision::Skip("hostNetwork Pod");
    }
    if SYSTEM_NAMESPACES.contains(&pod.namespace) {
        return Decision::Skip("system namespace");
    }
    if pod
        .annotations
        .get(STATUS_ANNOTATION)
        .is_some_and(|s| !s.is_empty())
    {
        return Decision::Skip("already injected");
    }
    match pod
        .annotations
        .get(INJECT_ANNOTATION)
        .map(|v| v.to_ascii_lowercase())
    {
        Some(v) if matches!(v.as_str(), "y" | "yes" | "true" | "on") => return Decision::Inject,
        Some(v) if !v.is_empty() => return Decision::Skip("annotation sidecar.istio.io/inject"),
        _ => {}
    }
    if config.never_inject.iter().any(|s| s.matches(pod.labels)) {
        return Decision::Skip("neverInjectSelector");
    }
    if config.always_inject.iter().any(|s| s.matches(pod.labels)) {
        return Decision::Inject;
    }
    match config.policy {
        Policy::Enabled => Decision::Inject,
        Policy::Disabled => Decision::Skip("policy disabled"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A Kubernetes label selector, checked once when the config loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    pub fn new(selector: &LabelSelector) -> Result<Selector, String> {
        let mut requirements: Vec<Requirement> = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
            .collect();
        for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
            let values = e.values.clone().unwrap_or_default();
            let needs_values = matches!(e.operator.as_str(), "In" | "NotIn");
            if needs_values == values.is_empty() {
                return Err(format!(
                    "matchExpressions[{i}]: operator {} {}",
                    e.operator,
                    if needs_values {
                        "needs values"
                    } else {
                        "takes no values"
                    }
                ));
            }
            requirements.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err(format!(
                        "matchExpressions[{i}].operator: {other:?} is not In, NotIn, Exists or DoesNotExist"
                    ));
                }
            });
        }
        Ok(Selector(requirements))
    }

    /// As Kubernetes: every requirement holds; an empty selector matches all.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn config(policy: &str, never: &str, always: &str) -> Config {
        let inject = format!(
            "policy: {policy}\nneverInjectSelector: {never}\nalwaysInjectSelector: {always}\ntemplate: ''\n"
        );
        Config::from_texts(
            &("inject".into(), inject),
            &("values".into(), String::new()),
            &("mesh".into(), String::new()),
        )
        .unwrap()
    }

    fn decide_for(
        config: &Config,
        namespace: &str,
        host_network: bool,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Decision {
        decide(
            config,
            &PodFacts {
                namespace,
                host_network,
                labels: &map(labels),
                annotations: &map(annotations),
            },
        )
    }

    #[test]
    fn every_rule_has_a_case_that_injects_and_one_that_does_not() {
        let enabled = config(
            "enabled",
            "[{matchLabels: {batch: 'true'}}]",
            "[{matchExpressions: [{key: mesh, operator: Exists}]}]",
        );
        let disabled = config(
            "disabled",
            "[{matchLabels: {batch: 'true'}}]",
            "[{matchExpressions: [{key: mesh, operator: Exists}]}]",
        );
        use Decision::*;
        // Policy.
        assert_eq!(decide_for(&enabled, "default", false, &[], &[]), Inject);
        assert_eq!(
            decide_for(&disabled, "default", false, &[], &[]),
            Skip("policy disabled")
        );
        // hostNetwork and system namespaces, whatever the annotation says.
        let yes = [(INJECT_ANNOTATION, "true")];
        assert_eq!(
            decide_for(&enabled, "default", true, &[], &yes),
            Skip("hostNetwork Pod")
        );
        assert_eq!(
            decide_for(&enabled, "kube-system", false, &[], &yes),
            Skip("system namespace")
        );
        assert_eq!(
            decide_for(&enabled, "kube-public", false, &[], &[]),
            Skip("system namespace")
        );
        // The annotation, in every spelling Istio took, wins over the policy.
        for v in ["y", "yes", "true", "on", "TRUE", "On"] {
            assert_eq!(
                decide_for(&disabled, "default", false, &[], &[(INJECT_ANNOTATION, v)]),
                Inject,
                "{v}"
            );
        }
        for v in ["false", "no", "n", "off", "nope"] {
            assert_eq!(
                decide_for(&enabled, "default", false, &[], &[(INJECT_ANNOTATION, v)]),
                Skip("annotation sidecar.istio.io/inject"),
                "{v}"
            );
        }
        // An empty annotation is no annotation.
        assert_eq!(
            decide_for(&enabled, "default", false, &[], &[(INJECT_ANNOTATION, "")]),
            Inject
        );
        // and wins over the selectors.
        assert_eq!(
            decide_for(
                &enabled,
                "default",
                false,
                &[("batch", "true")],
                &[(INJECT_ANNOTATION, "true")]
            ),
            Inject
        );
        // neverInjectSelector before alwaysInjectSelector.
        assert_eq!(
            decide_for(&enabled, "default", false, &[("batch", "true")], &[]),
            Skip("neverInjectSelector")
        );
        assert_eq!(
            decide_for(
                &disabled,
                "default",
                false,
                &[("batch", "true"), ("mesh", "x")],
                &[]
            ),
            Skip("neverInjectSelector")
        );
        assert_eq!(
            decide_for(&disabled, "default", false, &[("mesh", "")], &[]),
            Inject
        );
        assert_eq!(
            decide_for(&enabled, "default", false, &[("batch", "false")], &[]),
            Inject
        );
        // Injected once: never again.
        assert_eq!(
            decide_for(
                &enabled,
                "default",
                false,
                &[],
                &[(STATUS_ANNOTATION, "{\"version\":\"x\"}")]
            ),
            Skip("already injected")
        );
    }

    #[test]
    fn selectors_follow_kubernetes() {
        let s: LabelSelector = serde_yaml::from_str(
            "matchLabels: {app: web}\nmatchExpressions:\n- {key: tier, operator: NotIn, values: [db]}\n- {key: legacy, operator: DoesNotExist}\n",
        )
        .unwrap();
        let s = Selector::new(&s).unwrap();
        assert!(s.matches(&map(&[("app", "web")])));
        assert!(s.matches(&map(&[("app", "web"), ("tier", "front")])));
        assert!(!s.matches(&map(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&map(&[("app", "web"), ("legacy", "")])));
        assert!(!s.matches(&map(&[("app", "api")])));
        assert!(
            Selector::new(&LabelSelector::default())
                .unwrap()
                .matches(&map(&[]))
        );
        let bad: LabelSelector =
            serde_yaml::from_str("matchExpressions:\n- {key: a, operator: In}\n").unwrap();
        assert_eq!(
            Selector::new(&bad).unwrap_err(),
            "matchExpressions[0]: operator In needs values"
        );
    }
}
