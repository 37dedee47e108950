//! The Pods kubernetesenv knows, indexed by Istio's uid
//! (`kubernetes://<pod>.<namespace>`) and by IP, with what Istio derived from
//! each: workload, owner and their uids.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;

use crate::attribute::Value;

/// One Pod's attributes, as values ready to hand out.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEntry {
    pub uid: Value,
    pub ip: Option<Value>,
    pub host_ip: Option<Value>,
    pub name: Value,
    pub namespace: Value,
    pub labels: Value,
    pub service_account: Value,
    pub container: Option<Value>,
    pub workload_uid: Value,
    pub workload_name: Value,
    pub workload_namespace: Value,
    pub owner: Value,
    /// Whether the Pod's IP is its own: not the node's (hostNetwork), and not
    /// a finished Pod's, whose address a new Pod may already have.
    pub owns_ip: bool,
}

impl PodEntry {
    /// `None` for a Pod without a name.
    pub fn from_pod(pod: &Pod) -> Option<PodEntry> {
        let meta = &pod.metadata;
        let name = meta.name.as_deref()?;
        let namespace = meta.namespace.as_deref().unwrap_or("default");
        let labels = meta.labels.clone().unwrap_or_default();
        let ip = |s: Option<&String>| {
            s.and_then(|s| s.parse::<IpAddr>().ok())
                .map(Value::IpAddress)
        };
        let status = pod.status.as_ref();
        let spec = pod.spec.as_ref();
        let (owner, workload) = owner_and_workload(pod, name, namespace, &labels);
        let finished = status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        Some(PodEntry {
            uid: Value::string(&format!("kubernetes://{name}.{namespace}")),
            ip: ip(status.and_then(|s| s.pod_ip.as_ref())),
            host_ip: ip(status.and_then(|s| s.host_ip.as_ref())),
            name: Value::string(name),
            namespace: Value::string(namespace),
            labels: Value::StringMap(Arc::new(labels.into_iter().collect::<BTreeMap<_, _>>())),
            service_account: Value::string(
                spec.and_then(|s| s.service_account_name.as_deref())
                    .unwrap_or("default"),
            ),
            container: spec
                .and_then(|s| s.containers.first())
                .map(|c| Value::string(&c.name)),
            workload_uid: Value::string(&format!("istio://{namespace}/workloads/{workload}")),
            workload_name: Value::string(&workload),
            workload_namespace: Value::string(namespace),
            owner: Value::string(&owner),
            owns_ip: !finished && !host_network,
        })
    }
}

/// The Pod's controller as Istio named it, and the workload it belongs to: a
/// ReplicaSet's Deployment (its name less the pod-template hash), another
/// controller itself, or the Pod alone.
fn owner_and_workload(
    pod: &Pod,
    name: &str,
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> (String, String) {
    let controller = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .or_else(|| pod.metadata.owner_references.iter().flatten().next());
    let Some(owner) = controller else {
        return (
            format!("kubernetes://apis/v1/namespaces/{namespace}/pods/{name}"),
            name.to_string(),
        );
    };
    let hash = labels.get("pod-template-hash");
    let deployment = (owner.kind == "ReplicaSet")
        .then(|| {
            let (base, suffix) = owner.name.rsplit_once('-')?;
            (hash.is_none() || hash.map(String::as_str) == Some(suffix)).then_some(base)
        })
        .flatten();
    match deployment {
        Some(d) => (
            format!("kubernetes://apis/apps/v1/namespaces/{namespace}/deployments/{d}"),
            d.to_string(),
        ),
        None => {
            let group = owner.api_version.as_str();
            let kind = owner.kind.to_lowercase();
            (
                format!(
                    "kubernetes://apis/{group}/namespaces/{namespace}/{kind}s/{}",
                    owner.name
                ),
                owner.name.clone(),
            )
        }
    }
}

#[derive(Debug, Default)]
pub struct Pods {
    by_uid: HashMap<String, Arc<PodEntry>>,
    by_ip: HashMap<IpAddr, Arc<PodEntry>>,
}

impl Pods {
    pub fn new(pods: impl IntoIterator<Item = PodEntry>) -> Pods {
        Pods::shared(pods.into_iter().map(Arc::new))
    }

    /// An index of entries another index (or a watcher) also holds. Of Pods
    /// sharing an address the last given wins, and only a Pod that owns its
    /// address is found by it.
    pub fn shared(pods: impl IntoIterator<Item = Arc<PodEntry>>) -> Pods {
        let mut out = Pods::default();
        for p in pods {
            if let (Some(Value::IpAddress(ip)), true) = (&p.ip, p.owns_ip) {
                out.by_ip.insert(*ip, p.clone());
            }
            if let Some(uid) = p.uid.as_str() {
                out.by_uid.insert(uid.to_string(), p);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    /// By uid first, as Istio's adapter looked Pods up, then by address.
    pub fn find(&self, uid: Option<&str>, ip: Option<IpAddr>) -> Option<&Arc<PodEntry>> {
        uid.filter(|u| !u.is_empty())
            .and_then(|u| self.by_uid.get(u))
            .or_else(|| ip.and_then(|ip| self.by_ip.get(&ip)))
    }
}

/// The Pods as one source last saw them, shared by every handler: a source
/// swaps the whole index, readers take the current one.
#[derive(Clone, Default)]
pub struct PodIndex(Arc<Current>);

#[derive(Default)]
struct Current {
    pods: RwLock<Arc<Pods>>,
    /// Counts swaps, so that answers remembered for one set of Pods are
    /// known to be stale once another replaces it.
    version: AtomicU64,
}

impl PodIndex {
    pub fn get(&self) -> Arc<Pods> {
        self.0
            .pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set(&self, pods: Pods) {
        *self.0.pods.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pods);
        // After the swap: whoever reads the new version then reads Pods at
        // least this new, so nothing older is remembered under it.
        self.0.version.fetch_add(1, Ordering::Release);
    }

    /// Changes with every [`set`](Self::set). Read it before [`get`](Self::get).
    pub fn version(&self) -> u64 {
        self.0.version.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> PodEntry {
        PodEntry::from_pod(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn a_replicaset_pod_belongs_to_its_deployment() {
        let p = pod(
            "metadata:\n  name: reviews-v1-7f99cc4496-gdxfn\n  namespace: default\n  labels: {app: reviews, version: v1, pod-template-hash: 7f99cc4496}\n  ownerReferences:\n  - {apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v1-7f99cc4496, uid: u, controller: true}\nspec:\n  serviceAccountName: bookinfo-reviews\n  containers: [{name: reviews}]\nstatus: {podIP: 10.1.0.5, hostIP: 192.168.0.2}\n",
        );
        assert_eq!(p.workload_name, Value::string("reviews-v1"));
        assert_eq!(
            p.workload_uid,
            Value::string("istio://default/workloads/reviews-v1")
        );
        assert_eq!(
            p.owner,
            Value::string("kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1")
        );
        assert_eq!(
            p.uid,
            Value::string("kubernetes://reviews-v1-7f99cc4496-gdxfn.default")
        );
        assert_eq!(p.service_account, Value::string("bookinfo-reviews"));
        assert_eq!(p.container, Some(Value::string("reviews")));
        assert_eq!(p.ip, Some(Value::IpAddress("10.1.0.5".parse().unwrap())));
    }

    #[test]
    fn other_controllers_and_bare_pods_are_their_own_workloads() {
        let p = pod(
            "metadata:\n  name: db-0\n  namespace: data\n  ownerReferences:\n  - {apiVersion: apps/v1, kind: StatefulSet, name: db, uid: u, controller: true}\n",
        );
        assert_eq!(p.workload_name, Value::string("db"));
        assert_eq!(
            p.owner,
            Value::string("kubernetes://apis/apps/v1/namespaces/data/statefulsets/db")
        );
        let bare = pod("metadata: {name: client}\nstatus: {podIP: 127.0.0.9}\n");
        assert_eq!(bare.workload_name, Value::string("client"));
        assert_eq!(bare.namespace, Value::string("default"));
        assert_eq!(
            bare.owner,
            Value::string("kubernetes://apis/v1/namespaces/default/pods/client")
        );
        assert_eq!(bare.service_account, Value::string("default"));
    }

    #[test]
    fn pods_are_found_by_uid_then_by_address() {
        let pods = Pods::new([
            pod("metadata: {name: a}\nstatus: {podIP: 10.0.0.1}\n"),
            pod("metadata: {name: b}\nstatus: {podIP: 10.0.0.2}\n"),
        ]);
        let ip = |s: &str| Some(s.parse().unwrap());
        let name = |p: Option<&Arc<PodEntry>>| p.map(|p| p.name.to_string());
        assert_eq!(
            name(pods.find(Some("kubernetes://b.default"), ip("10.0.0.1"))),
            Some("b".into())
        );
        assert_eq!(
            name(pods.find(Some("kubernetes://gone.default"), ip("10.0.0.1"))),
            Some("a".into())
        );
        assert_eq!(name(pods.find(None, ip("10.0.0.3"))), None);
        assert_eq!(name(pods.find(Some(""), None)), None);
    }

    #[test]
    fn only_a_pod_that_owns_its_address_is_found_by_it() {
        let pods = Pods::new([
            pod("metadata: {name: web}\nstatus: {podIP: 10.0.0.7, phase: Running}\n"),
            pod("metadata: {name: job-done}\nstatus: {podIP: 10.0.0.7, phase: Succeeded}\n"),
            pod(
                "metadata: {name: node-agent}\nspec: {hostNetwork: true, containers: []}\nstatus: {podIP: 192.168.0.2}\n",
            ),
        ]);
        let at = |addr: &str| pods.find(None, Some(addr.parse().unwrap()));
        assert_eq!(
            at("10.0.0.7").map(|p| p.name.to_string()),
            Some("web".into())
        );
        assert!(
            at("192.168.0.2").is_none(),
            "the node's address is not the Pod's"
        );
        assert!(
            pods.find(Some("kubernetes://node-agent.default"), None)
                .is_some(),
            "still found by uid"
        );
    }
}
