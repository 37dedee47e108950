//! Istio's `kubernetesenv` adapter: for the `kubernetes` template, the Pods
//! behind a request's source and destination (by uid, then by IP) and what
//! follows from them (labels, workload, owner, service account), which the
//! instance's `attributeBindings` turn into `source.workload.name` and the
//! like. The Pods come from a [`PodIndex`] that a source keeps current: the
//! File-registry directory locally ([`dir`]), the API server on Kubernetes
//! ([`kube`]).

pub mod dir;
pub mod kube;
mod pods;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value as Json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use pods::{PodEntry, PodIndex, Pods};

use super::{Adapter, Handler, ParamsError, params};
use crate::attribute::Value;
use crate::template::{Instance, Template};

pub struct KubernetesEnv {
    pods: PodIndex,
}

impl KubernetesEnv {
    pub fn new(pods: PodIndex) -> KubernetesEnv {
        KubernetesEnv { pods }
    }

    /// The adapter with the Pods of the binary's cluster, kept current
    /// until `shutdown`: those under `dir` (local mode's File registry,
    /// which is also the `fs://` config store), or with no directory (an
    /// `mcp://` store) the API server's, found as kubectl finds it
    /// (`KUBECONFIG`, `~/.kube/config`, else the Pod's service account).
    /// Without either the adapter answers as for unknown Pods.
    pub async fn start(
        dir: Option<PathBuf>,
        shutdown: CancellationToken,
    ) -> (KubernetesEnv, JoinHandle<()>) {
        let pods = PodIndex::default();
        let Some(dir) = dir else {
            let task = match ::kube::Client::try_default().await {
                Ok(client) => {
                    tracing::info!("kubernetesenv: watching the API server's Pods");
                    tokio::spawn(kube::watch(client, pods.clone(), shutdown))
                }
                Err(e) => {
                    tracing::warn!(
                        "kubernetesenv: no Pod directory and no Kubernetes configuration \
                         ({e}); source and destination workloads will be unknown"
                    );
                    tokio::spawn(async {})
                }
            };
            return (KubernetesEnv::new(pods), task);
        };
        let (first, errors) = dir::load(&dir);
        for e in &errors {
            tracing::warn!("kubernetesenv: {e}");
        }
        tracing::info!(pods = first.len(), dir = %dir.display(), "kubernetesenv: Pods read");
        pods.set(first);
        let watched = pods.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = dir::watch(dir, watched, shutdown).await {
                tracing::error!(
                    "kubernetesenv: cannot watch the Pods' directory; changes will not be seen: {e}"
                );
            }
        });
        (KubernetesEnv::new(pods), task)
    }
}

/// Istio's params, accepted so existing handlers load; the Pods' source is
/// the binary's, not the handler's.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Params {
    #[serde(default, alias = "kubeconfig_path")]
    kubeconfig_path: String,
    #[serde(default, alias = "cache_refresh_duration")]
    cache_refresh_duration: Json,
    #[serde(default, alias = "cluster_domain_name")]
    cluster_domain_name: String,
    #[serde(default, alias = "pod_label_for_service")]
    pod_label_for_service: String,
    #[serde(default, alias = "pod_label_for_istio_component_service")]
    pod_label_for_istio_component_service: String,
    #[serde(default, alias = "lookup_ingress_source_and_origin_values")]
    lookup_ingress_source_and_origin_values: bool,
    #[serde(default, alias = "cluster_registries_namespace")]
    cluster_registries_namespace: String,
}

impl Adapter for KubernetesEnv {
    fn name(&self) -> &'static str {
        "kubernetesenv"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::Kubernetes]
    }

    fn build(&self, json: &Json) -> Result<Arc<dyn Handler>, ParamsError> {
        params::<Params>(json)?;
        Ok(Arc::new(EnvHandler {
            pods: self.pods.clone(),
        }))
    }
}

struct EnvHandler {
    pods: PodIndex,
}

#[async_trait]
impl Handler for EnvHandler {
    fn generate(&self, instance: &Instance) -> Result<Vec<(&'static str, Value)>, String> {
        let text = |path| instance.value(path).and_then(Value::as_str);
        let ip = |path| match instance.value(path) {
            Some(Value::IpAddress(ip)) if !ip.is_unspecified() => Some(*ip),
            _ => None,
        };
        let pods = self.pods.get();
        let mut out = Vec::with_capacity(24);
        if let Some(p) = pods.find(text("sourceUid"), ip("sourceIp")) {
            side(&mut out, p, &SOURCE);
        }
        if let Some(p) = pods.find(text("destinationUid"), ip("destinationIp")) {
            side(&mut out, p, &DESTINATION);
            if let Some(c) = &p.container {
                out.push(("destination_container_name", c.clone()));
            }
        }
        Ok(out)
    }

    // The answer is the instance's Pods, and they change only by a swap.
    fn generation(&self) -> Option<u64> {
        Some(self.pods.version())
    }
}

/// The `$out` names of one side of a request.
struct Side {
    uid: &'static str,
    ip: &'static str,
    host_ip: &'static str,
    name: &'static str,
    namespace: &'static str,
    labels: &'static str,
    service_account: &'static str,
    workload_uid: &'static str,
    workload_name: &'static str,
    workload_namespace: &'static str,
    owner: &'static str,
}

const SOURCE: Side = Side {
    uid: "source_pod_uid",
    ip: "source_pod_ip",
    host_ip: "source_host_ip",
    name: "source_pod_name",
    namespace: "source_namespace",
    labels: "source_labels",
    service_account: "source_service_account_name",
    workload_uid: "source_workload_uid",
    workload_name: "source_workload_name",
    workload_namespace: "source_workload_namespace",
    owner: "source_owner",
};

const DESTINATION: Side = Side {
    uid: "destination_pod_uid",
    ip: "destination_pod_ip",
    host_ip: "destination_host_ip",
    name: "destination_pod_name",
    namespace: "destination_namespace",
    labels: "destination_labels",
    service_account: "destination_service_account_name",
    workload_uid: "destination_workload_uid",
    workload_name: "destination_workload_name",
    workload_namespace: "destination_workload_namespace",
    owner: "destination_owner",
};

fn side(out: &mut Vec<(&'static str, Value)>, p: &PodEntry, s: &Side) {
    out.extend([
        (s.uid, p.uid.clone()),
        (s.name, p.name.clone()),
        (s.namespace, p.namespace.clone()),
        (s.labels, p.labels.clone()),
        (s.service_account, p.service_account.clone()),
        (s.workload_uid, p.workload_uid.clone()),
        (s.workload_name, p.workload_name.clone()),
        (s.workload_namespace, p.workload_namespace.clone()),
        (s.owner, p.owner.clone()),
    ]);
    if let Some(ip) = &p.ip {
        out.push((s.ip, ip.clone()));
    }
    if let Some(ip) = &p.host_ip {
        out.push((s.host_ip, ip.clone()));
    }
}
