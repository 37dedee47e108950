//! Checks across objects, each of which is valid on its own: warnings, as
//! `istioctl analyze` gives them, in the shape of [`ConfigError`]. A warning
//! never rejects an object (the object it names may simply not be loaded
//! yet).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{ConfigError, ConfigObject, Spec};
use crate::networking::{Destination, DestinationRule, Gateway, VirtualService};

/// The DNS suffix short service names resolve under.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// Warns about:
/// - a VirtualService destination or mirror naming a subset that no
///   DestinationRule for its host defines;
/// - a VirtualService naming a gateway (`name`, `namespace/name` or
///   `name.namespace.svc.cluster.local`; not `mesh`) that no Gateway is;
/// - a Gateway whose selector matches none of `workloads` (each a
///   workload's labels). `None` skips that check, for callers that know no
///   workloads; `Some(&[])` means there are none.
pub fn analyze(
    objects: &[&ConfigObject],
    workloads: Option<&[BTreeMap<String, String>]>,
) -> Vec<ConfigError> {
    let mut rules: Vec<(String, &DestinationRule)> = Vec::new();
    let mut gateways = BTreeSet::new();
    for obj in objects {
        match &obj.spec {
            Spec::DestinationRule(dr) => rules.push((fqdn(&dr.host, &obj.meta.namespace), dr)),
            Spec::Gateway(_) => {
                gateways.insert(format!("{}/{}", obj.meta.namespace, obj.meta.name));
            }
            _ => {}
        }
    }
    let mut warnings = Vec::new();
    for obj in objects {
        let mut warn = |field: String, message: String| {
            warnings.push(ConfigError {
                object: obj.key(),
                field,
                message,
            })
        };
        match &obj.spec {
            Spec::VirtualService(vs) => {
                let ns = &obj.meta.namespace;
                for (field, d) in destinations(vs) {
                    if let Some(message) = missing_subset(d, ns, &rules) {
                        warn(field, message);
                    }
                }
                for (field, name) in gateway_names(vs) {
                    let key = gateway_key(name, ns);
                    if !gateways.contains(&key) {
                        warn(field, format!("gateway {key} is defined by no Gateway"));
                    }
                }
            }
            Spec::Gateway(g) => {
                if let Some(workloads) = workloads
                    && !workloads.iter().any(|w| selects(g, w))
                {
                    warn(
                        "spec.selector".into(),
                        format!("no workload has the labels {}", show_labels(&g.selector)),
                    );
                }
            }
            _ => {}
        }
    }
    warnings
}

/// A host as Pilot resolves it in `namespace`: a short name (no dot) is a
/// service of that namespace; anything else is taken as written.
pub fn fqdn(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.{CLUSTER_DOMAIN}")
    }
}

/// Whether a (possibly `*.`-wildcarded) DestinationRule host covers `host`.
fn covers(rule_host: &str, host: &str) -> bool {
    match rule_host.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => rule_host == host,
    }
}

fn missing_subset(
    d: &Destination,
    namespace: &str,
    rules: &[(String, &DestinationRule)],
) -> Option<String> {
    if d.subset.is_empty() {
        return None;
    }
    let host = fqdn(&d.host, namespace);
    let defined = rules
        .iter()
        .filter(|(rule_host, _)| covers(rule_host, &host))
        .any(|(_, dr)| dr.subsets.iter().any(|s| s.name == d.subset));
    (!defined).then(|| {
        format!(
            "subset {:?} of {host} is defined by no DestinationRule",
            d.subset
        )
    })
}

/// Every destination of a VirtualService, with its field.
fn destinations(vs: &VirtualService) -> Vec<(String, &Destination)> {
    let mut out = Vec::new();
    for (i, route) in vs.http.iter().enumerate() {
        for (j, d) in route.route.iter().enumerate() {
            out.push((
                format!("spec.http[{i}].route[{j}].destination.subset"),
                &d.destination,
            ));
        }
        if let Some(m) = &route.mirror {
            out.push((format!("spec.http[{i}].mirror.subset"), m));
        }
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        for (j, d) in route.route.iter().enumerate() {
            out.push((
                format!("spec.tcp[{i}].route[{j}].destination.subset"),
                &d.destination,
            ));
        }
    }
    out
}

/// Every gateway a VirtualService names, with its field; `mesh` left out.
fn gateway_names(vs: &VirtualService) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = vs
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| (format!("spec.gateways[{i}]"), g.as_str()))
        .collect();
    for (i, route) in vs.http.iter().enumerate() {
        for (j, m) in route.matches.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                out.push((format!("spec.http[{i}].match[{j}].gateways[{k}]"), g));
            }
        }
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        for (j, m) in route.matches.iter().enumerate() {
            for (k, g) in m.gateways.iter().enumerate() {
                out.push((format!("spec.tcp[{i}].match[{j}].gateways[{k}]"), g));
            }
        }
    }
    out.retain(|(_, g)| *g != "mesh");
    out
}

/// `namespace/name` of a gateway as a VirtualService in `namespace` names it.
fn gateway_key(name: &str, namespace: &str) -> String {
    if name.contains('/') {
        return name.to_string();
    }
    match name.split_once('.') {
        // `name.namespace.svc.cluster.local`, as Istio 1.4 also read it.
        Some((name, rest)) => {
            let ns = rest.split('.').next().unwrap_or_default();
            format!("{ns}/{name}")
        }
        None => format!("{namespace}/{name}"),
    }
}

fn selects(gateway: &Gateway, labels: &BTreeMap<String, String>) -> bool {
    gateway
        .selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

fn show_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "{} (it selects every workload)".into();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Document, parse_documents};

    fn objects(text: &str) -> Vec<ConfigObject> {
        parse_documents(text)
            .map(|d| match d {
                Ok(Document::Config(o)) => *o,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  gateways: [mesh, bookinfo-gateway, istio-system/missing, other.istio-system.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews.bookinfo.svc.cluster.local, subset: v3}
      weight: 50
    mirror: {host: ratings, subset: v1}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: all, namespace: istio-system}
spec:
  host: "*.bookinfo.svc.cluster.local"
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: bookinfo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"#;

    fn shown(warnings: &[ConfigError]) -> Vec<String> {
        warnings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn missing_subsets_and_gateways_are_warned_about() {
        let objs = objects(CONFIG);
        let refs: Vec<&ConfigObject> = objs.iter().collect();
        assert_eq!(
            shown(&analyze(&refs, None)),
            [
                "VirtualService bookinfo/reviews: spec.http[0].route[1].destination.subset: subset \"v3\" of reviews.bookinfo.svc.cluster.local is defined by no DestinationRule",
                "VirtualService bookinfo/reviews: spec.gateways[2]: gateway istio-system/missing is defined by no Gateway",
                "VirtualService bookinfo/reviews: spec.gateways[3]: gateway istio-system/other is defined by no Gateway",
            ]
        );
    }

    #[test]
    fn a_gateway_selecting_no_workload_is_warned_about() {
        let objs = objects(CONFIG);
        let gateway: Vec<&ConfigObject> = objs.iter().skip(3).collect();
        let ingress = BTreeMap::from([
            ("istio".to_string(), "ingressgateway".to_string()),
            ("app".to_string(), "istio-ingressgateway".to_string()),
        ]);
        let app = BTreeMap::from([("app".to_string(), "reviews".to_string())]);
        assert!(analyze(&gateway, None).is_empty());
        assert!(analyze(&gateway, Some(&[app.clone(), ingress])).is_empty());
        assert_eq!(
            shown(&analyze(&gateway, Some(&[app]))),
            [
                "Gateway bookinfo/bookinfo-gateway: spec.selector: no workload has the labels istio=ingressgateway"
            ]
        );
        assert_eq!(analyze(&gateway, Some(&[])).len(), 1);
    }

    #[test]
    fn short_names_resolve_in_the_object_namespace() {
        assert_eq!(
            fqdn("reviews", "bookinfo"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(fqdn("reviews.bookinfo", "x"), "reviews.bookinfo");
        assert_eq!(gateway_key("gw", "ns"), "ns/gw");
        assert_eq!(gateway_key("a/gw", "ns"), "a/gw");
    }
}
