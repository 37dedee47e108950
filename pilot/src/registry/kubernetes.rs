//! The Kubernetes registry (`--registries Kubernetes`): kube-rs reflectors on
//! Services, Endpoints, Pods and Nodes, republished as one [`ClusterState`]
//! whenever any of them changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::state::{PodInfo, key};
use super::{ClusterState, ServiceRegistry};

pub struct KubernetesRegistry {
    client: Client,
}

impl KubernetesRegistry {
    pub fn new(client: Client) -> KubernetesRegistry {
        KubernetesRegistry { client }
    }
}

/// Starts one reflector; every event pokes `changed`. The returned future drives
/// it. `slim` trims each object before it is cached: on a large cluster the
/// reflector caches are most of Pilot's memory.
fn reflect<K>(
    client: &Client,
    changed: mpsc::Sender<()>,
    slim: fn(&mut K),
) -> (Store<K>, BoxFuture<'static, ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(slim),
    )
    .default_backoff()
    .for_each(move |event| {
        let changed = changed.clone();
        async move {
            match event {
                Ok(_) => {
                    let _ = changed.try_send(());
                }
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying")
                }
            }
        }
    });
    (reader, stream.boxed())
}

fn by_key<K, V>(
    store: &Store<K>,
    key_of: impl Fn(&K) -> String,
    value: impl Fn(&K) -> V,
) -> BTreeMap<String, V>
where
    K: Clone + Resource<DynamicType = ()>,
{
    store
        .state()
        .iter()
        .map(|o| (key_of(o), value(o)))
        .collect()
}

impl ServiceRegistry for KubernetesRegistry {
    fn name(&self) -> &'static str {
        "Kubernetes"
    }

    fn run(
        self: Box<Self>,
        out: watch::Sender<Option<Arc<ClusterState>>>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        async move {
            // Capacity 1: a pending poke already covers any later change.
            let (tx, mut rx) = mpsc::channel(1);
            let (services, s) = reflect::<Service>(&self.client, tx.clone(), drop_managed_fields);
            let (endpoints, e) =
                reflect::<Endpoints>(&self.client, tx.clone(), drop_managed_fields);
            let (pods, p) = reflect::<Pod>(&self.client, tx.clone(), slim_pod);
            let (nodes, n) = reflect::<Node>(&self.client, tx, slim_node);
            let drivers = futures::future::join4(s, e, p, n);
            let publish = async {
                for (kind, ready) in [
                    ("Service", services.wait_until_ready().boxed()),
                    ("Endpoints", endpoints.wait_until_ready().boxed()),
                    ("Pod", pods.wait_until_ready().boxed()),
                    ("Node", nodes.wait_until_ready().boxed()),
                ] {
                    if ready.await.is_err() {
                        return;
                    }
                    tracing::info!(kind, "Kubernetes cache synced");
                }
                loop {
                    let state = ClusterState {
                        services: by_key(&services, |o| key(&o.metadata), Clone::clone),
                        endpoints: by_key(&endpoints, |o| key(&o.metadata), Clone::clone),
                        pods: by_key(&pods, |o| key(&o.metadata), |p| PodInfo::from(p)),
                        nodes: by_key(
                            &nodes,
                            |o| o.metadata.name.clone().unwrap_or_default(),
                            Clone::clone,
                        ),
                    };
                    out.send_if_modified(|cur| {
                        let changed = cur.as_deref() != Some(&state);
                        if changed {
                            *cur = Some(Arc::new(state));
                        }
                        changed
                    });
                    if rx.recv().await.is_none() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = drivers => {}
                _ = publish => {}
            }
            Ok(())
        }
        .boxed()
    }
}

fn drop_managed_fields<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
    o.meta_mut().annotations = None;
}

/// Keeps what [`PodInfo`] reads.
fn slim_pod(pod: &mut Pod) {
    drop_managed_fields(pod);
    let service_account_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone());
    pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        service_account_name,
        ..Default::default()
    });
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        pod_ip,
        ..Default::default()
    });
}

/// Keeps labels (locality) and addresses.
fn slim_node(node: &mut Node) {
    drop_managed_fields(node);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.conditions = None;
    }
}
