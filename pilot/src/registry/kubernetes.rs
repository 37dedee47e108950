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

use super::state::key;
use super::{ClusterState, ServiceRegistry};

pub struct KubernetesRegistry {
    client: Client,
}

impl KubernetesRegistry {
    pub fn new(client: Client) -> KubernetesRegistry {
        KubernetesRegistry { client }
    }
}

/// Starts one reflector; every event pokes `changed`. The returned future drives it.
fn reflect<K>(client: &Client, changed: mpsc::Sender<()>) -> (Store<K>, BoxFuture<'static, ()>)
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
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
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

fn by_key<K: Resource>(store: &Store<K>, key_of: impl Fn(&K) -> String) -> BTreeMap<String, K>
where
    K: Clone + Resource<DynamicType = ()>,
{
    store
        .state()
        .iter()
        .map(|o| (key_of(o), o.as_ref().clone()))
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
            let (services, s) = reflect::<Service>(&self.client, tx.clone());
            let (endpoints, e) = reflect::<Endpoints>(&self.client, tx.clone());
            let (pods, p) = reflect::<Pod>(&self.client, tx.clone());
            let (nodes, n) = reflect::<Node>(&self.client, tx);
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
                        services: by_key(&services, |o| key(&o.metadata)),
                        endpoints: by_key(&endpoints, |o| key(&o.metadata)),
                        pods: by_key(&pods, |o| key(&o.metadata)),
                        nodes: by_key(&nodes, |o| o.metadata.name.clone().unwrap_or_default()),
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
