//! Pilot's service model: what every registry is turned into and what every
//! generator reads. Kubernetes Services and ServiceEntries both become
//! [`Service`]s; Endpoints addresses and ServiceEntry endpoints become
//! [`Instance`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use api::networking::Protocol;
use serde::Serialize;

pub type Labels = BTreeMap<String, String>;

/// Labels shared by a Pod's every appearance (its workload and each of its
/// instances): on a large mesh they are most of the model's memory.
pub type SharedLabels = Arc<Labels>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Resolution {
    /// Endpoints come from the registry over EDS.
    ClientSideLb,
    /// Envoy resolves the hosts (`STRICT_DNS`).
    Dns,
    /// Traffic goes to the address the caller asked for (`ORIGINAL_DST`).
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u32,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Fully qualified: `reviews.default.svc.cluster.local`.
    pub hostname: String,
    pub namespace: String,
    /// Cluster IP or the ServiceEntry's address, if any.
    pub address: Option<String>,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub mesh_external: bool,
}

impl Service {
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// One endpoint of one service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub service_port: u32,
    pub address: String,
    pub port: u32,
    pub labels: SharedLabels,
    /// `namespace/name` of the Pod behind it, when known.
    pub pod: Option<String>,
    pub service_account: String,
}

/// A workload Pilot knows by IP: what proxies are matched against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub labels: SharedLabels,
    pub service_account: String,
    /// The Pod's `policy.istio.io/check` annotation, if any.
    pub policy_check: Option<String>,
}

/// Everything the registries know, merged. Immutable once built; a change builds
/// a new one and shares the unchanged parts through `Arc`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceModel {
    pub services: BTreeMap<String, Arc<Service>>,
    /// Instances per service hostname.
    pub instances: BTreeMap<String, Arc<Vec<Instance>>>,
    /// Shared: pushes clone the model, and pods outnumber everything else.
    pub workloads: Arc<HashMap<String, Workload>>,
    /// Per instance IP, a fingerprint of the service ports it serves. A proxy
    /// whose fingerprint moves needs its inbound listeners and clusters again,
    /// even on an endpoint-only push (a pod becoming ready, say). Computed once
    /// per registry change, not per push.
    pub inbound: Arc<HashMap<String, u64>>,
}

impl ServiceModel {
    /// Services whose instances live at `ip`, with the instances: what a proxy at
    /// that address serves inbound.
    pub fn instances_at<'a>(
        &'a self,
        ip: &'a str,
    ) -> impl Iterator<Item = (&'a Arc<Service>, &'a Instance)> + 'a {
        self.instances.iter().flat_map(move |(host, list)| {
            let service = self.services.get(host);
            list.iter()
                .filter(move |i| i.address == ip)
                .filter_map(move |i| service.map(|s| (s, i)))
        })
    }

    /// Fills the derived fields once the services and instances are in.
    pub fn finish(mut self) -> ServiceModel {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut inbound: HashMap<String, u64> = HashMap::new();
        for (host, instances) in &self.instances {
            for i in instances.iter() {
                let mut h = DefaultHasher::new();
                (host, i.service_port, i.port).hash(&mut h);
                // Order-independent: the same set of ports gives the same sum.
                let entry = inbound.entry(i.address.clone()).or_default();
                *entry = entry.wrapping_add(h.finish());
            }
        }
        self.inbound = Arc::new(inbound);
        self
    }

    /// Decides between a debounced full push and an immediate endpoint push:
    /// pods coming and going (endpoint churn) is an endpoint change; services
    /// changing, or a running pod's labels changing (which can move its proxy
    /// to another Sidecar), is not.
    pub fn same_services(&self, other: &ServiceModel) -> bool {
        self.services == other.services
            && (Arc::ptr_eq(&self.workloads, &other.workloads)
                || self
                    .workloads
                    .iter()
                    .all(|(ip, w)| other.workloads.get(ip).is_none_or(|o| o.labels == w.labels)))
    }
}

/// Istio's short-name resolution: `reviews` in namespace `default` is
/// `reviews.default.svc.cluster.local`; names with a dot are taken as written.
pub fn resolve_host(host: &str, namespace: &str, domain: &str) -> String {
    if host.contains('.') || host == "*" {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{domain}")
    }
}

/// Does a VirtualService/DestinationRule host (possibly `*.foo.com`) cover a service hostname?
pub fn host_matches(pattern: &str, hostname: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => hostname.ends_with(suffix),
        None => pattern == hostname,
    }
}

pub fn labels_match(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_the_namespace() {
        assert_eq!(
            resolve_host("reviews", "default", "cluster.local"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("api.example.com", "default", "cluster.local"),
            "api.example.com"
        );
    }

    #[test]
    fn wildcard_hosts_match_suffixes() {
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(!host_matches("*.example.com", "example.org"));
        assert!(host_matches("*", "anything"));
        assert!(host_matches("a.b", "a.b"));
    }
}
