//! Who is on the other end of an ADS stream, read from its `Node`.

use std::collections::BTreeMap;

use api::xds::Node;
use prost_types::value::Kind as ValueKind;
use serde::Serialize;

use crate::model::{Labels, ServiceModel};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProxyKind {
    Sidecar,
    Router,
}

/// How traffic reaches the proxy: through iptables (`REDIRECT`, the Kubernetes
/// default) or by the application addressing it directly (`NONE`, local mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum InterceptionMode {
    Redirect,
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proxy {
    pub id: String,
    pub kind: ProxyKind,
    pub ip: String,
    /// `pod.namespace`, as in the node id.
    pub pod: String,
    pub namespace: String,
    pub interception: InterceptionMode,
    pub labels: Labels,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("node id {id:?}: {reason} (expected sidecar|router~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN)")]
pub struct NodeError {
    pub id: String,
    pub reason: &'static str,
}

impl Proxy {
    /// Parses `sidecar~10.1.1.5~reviews-v1-abc.default~default.svc.cluster.local`.
    pub fn from_node(node: &Node, model: &ServiceModel) -> Result<Proxy, NodeError> {
        let err = |reason| NodeError {
            id: node.id.clone(),
            reason,
        };
        let parts: Vec<&str> = node.id.split('~').collect();
        let [kind, ip, pod, domain] = parts[..] else {
            return Err(err("not four ~-separated parts"));
        };
        let kind = match kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" | "ingress" => ProxyKind::Router,
            _ => return Err(err("unknown proxy type")),
        };
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(err("the second part is not an IP address"));
        }
        let metadata: BTreeMap<String, String> = node
            .metadata
            .as_ref()
            .map(|s| {
                s.fields
                    .iter()
                    .filter_map(|(k, v)| match &v.kind {
                        Some(ValueKind::StringValue(s)) => Some((k.clone(), s.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let namespace = metadata
            .get("NAMESPACE")
            .cloned()
            .or_else(|| pod.rsplit_once('.').map(|(_, ns)| ns.to_string()))
            .or_else(|| domain.split('.').next().map(str::to_string))
            .unwrap_or_else(|| "default".into());
        let interception = match metadata.get("INTERCEPTION_MODE").map(String::as_str) {
            Some("NONE") => InterceptionMode::None,
            _ => InterceptionMode::Redirect,
        };
        let mut labels = model
            .workloads
            .get(ip)
            .map(|w| (*w.labels).clone())
            .unwrap_or_default();
        if labels.is_empty()
            && let Some(json) = metadata.get("LABELS")
        {
            labels = serde_json::from_str(json).unwrap_or_default();
        }
        Ok(Proxy {
            id: node.id.clone(),
            kind,
            ip: ip.to_string(),
            pod: pod.to_string(),
            namespace,
            interception,
            labels,
            metadata,
        })
    }

    /// Registry labels may arrive after the proxy connects; refresh them on each push.
    pub fn refresh(&mut self, model: &ServiceModel) {
        if let Some(w) = model.workloads.get(&self.ip) {
            self.labels = (*w.labels).clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_node_ids() {
        let node = Node {
            id: "sidecar~10.1.1.5~reviews-v1-abc.default~default.svc.cluster.local".into(),
            ..Default::default()
        };
        let p = Proxy::from_node(&node, &ServiceModel::default()).unwrap();
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.ip, "10.1.1.5");
        assert_eq!(p.namespace, "default");
        assert_eq!(p.interception, InterceptionMode::Redirect);
    }

    #[test]
    fn rejects_malformed_node_ids() {
        for id in [
            "",
            "sidecar~x~a.b~c",
            "pod~10.0.0.1~a.b~c",
            "sidecar~10.0.0.1",
        ] {
            let node = Node {
                id: id.into(),
                ..Default::default()
            };
            assert!(
                Proxy::from_node(&node, &ServiceModel::default()).is_err(),
                "{id}"
            );
        }
    }
}
