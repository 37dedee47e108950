use std::collections::HashMap;

use imbl::OrdMap;
use std::sync::Arc;

use api::networking::Protocol;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};

use crate::model::{Instance, Resolution, ServiceModel, ServicePort, SharedLabels, Workload};

/// The Kubernetes objects Pilot reads, keyed `namespace/name` (nodes by name).
/// Pods, by far the most numerous, are kept as the few fields Pilot uses.
/// The maps are persistent: a registry applies one watch event as one update
/// and publishes a copy that shares everything else, never a rebuilt state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    pub services: OrdMap<String, Service>,
    pub endpoints: OrdMap<String, Endpoints>,
    pub pods: OrdMap<String, PodInfo>,
    pub nodes: OrdMap<String, Node>,
}

/// What Pilot needs of a Pod: ~100 bytes instead of the several kilobytes of a full object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub labels: SharedLabels,
    pub service_account: String,
    pub ip: Option<String>,
    /// The `policy.istio.io/check` annotation: `enable`, `allow-on-error`, `disable`.
    pub policy_check: Option<String>,
}

/// The Pod annotation that overrides the mesh's policy check setting.
pub const POLICY_CHECK_ANNOTATION: &str = "policy.istio.io/check";

impl From<&Pod> for PodInfo {
    fn from(pod: &Pod) -> PodInfo {
        PodInfo {
            labels: Arc::new(pod.metadata.labels.clone().unwrap_or_default()),
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
            ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            policy_check: pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(POLICY_CHECK_ANNOTATION).cloned()),
        }
    }
}

pub fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

impl ClusterState {
    /// Converts the objects into Pilot's model. Objects that cannot be used (a
    /// Service without a name, an address that is not ready) are skipped, never fatal.
    pub fn to_model(&self, domain: &str) -> ServiceModel {
        let mut model = ServiceModel::default();
        let mut workloads = HashMap::new();
        let mut pods_by_ip: HashMap<&str, (&String, &PodInfo)> = HashMap::new();
        for (key, pod) in &self.pods {
            if let Some(ip) = pod.ip.as_deref() {
                pods_by_ip.insert(ip, (key, pod));
                let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
                workloads.insert(
                    ip.to_string(),
                    Workload {
                        name: name.to_string(),
                        namespace: namespace.to_string(),
                        labels: pod.labels.clone(),
                        service_account: pod.service_account.clone(),
                        policy_check: pod.policy_check.clone(),
                    },
                );
            }
        }
        model.workloads = Arc::new(workloads);
        for (key, svc) in &self.services {
            let Some(spec) = &svc.spec else { continue };
            let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
            let hostname = format!("{name}.{namespace}.svc.{domain}");
            let ports: Vec<ServicePort> = spec
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .filter(|p| is_port(p.port))
                .map(|p| {
                    let name = p.name.clone().unwrap_or_default();
                    ServicePort {
                        protocol: Protocol::from_port_name(&name),
                        name,
                        port: p.port as u32,
                    }
                })
                .collect();
            if ports.is_empty() {
                continue;
            }
            let address = spec
                .cluster_ip
                .clone()
                .filter(|ip| !ip.is_empty() && ip != "None");
            let mut instances = Vec::new();
            if let Some(eps) = self.endpoints.get(key) {
                for subset in eps.subsets.iter().flatten() {
                    for ep_port in subset.ports.iter().flatten() {
                        // Endpoint ports carry the service port's name; a lone unnamed port matches the lone service port.
                        let service_port = spec.ports.iter().flatten().find(|sp| {
                            sp.name.as_deref().unwrap_or_default()
                                == ep_port.name.as_deref().unwrap_or_default()
                        });
                        let Some(service_port) = service_port.filter(|_| is_port(ep_port.port))
                        else {
                            continue;
                        };
                        for addr in subset.addresses.iter().flatten() {
                            let pod = addr
                                .target_ref
                                .as_ref()
                                .filter(|r| r.kind.as_deref() == Some("Pod"))
                                .and_then(|r| {
                                    let ns = r.namespace.as_deref().unwrap_or(namespace);
                                    let k =
                                        format!("{ns}/{}", r.name.as_deref().unwrap_or_default());
                                    self.pods.get_key_value(&k)
                                })
                                .or_else(|| pods_by_ip.get(addr.ip.as_str()).copied());
                            instances.push(Instance {
                                service_port: service_port.port as u32,
                                address: addr.ip.clone(),
                                port: ep_port.port as u32,
                                labels: pod.map(|(_, p)| p.labels.clone()).unwrap_or_default(),
                                pod: pod.map(|(k, _)| k.clone()),
                                service_account: pod
                                    .map(|(_, p)| p.service_account.clone())
                                    .unwrap_or_default(),
                            });
                        }
                    }
                }
            }
            instances.sort_by(|a, b| {
                (a.service_port, &a.address, a.port).cmp(&(b.service_port, &b.address, b.port))
            });
            model
                .instances
                .insert(hostname.clone(), Arc::new(instances));
            model.services.insert(
                hostname.clone(),
                Arc::new(crate::model::Service {
                    hostname,
                    namespace: namespace.to_string(),
                    address,
                    ports,
                    resolution: Resolution::ClientSideLb,
                    mesh_external: false,
                }),
            );
        }
        model.finish()
    }
}

/// The API server validates ports; a recorded or hand-written object may not.
fn is_port(port: i32) -> bool {
    (1..=65535).contains(&port)
}
