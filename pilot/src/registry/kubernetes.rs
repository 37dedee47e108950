//! The Kubernetes registry (`--registries Kubernetes`): kube-rs watchers on
//! Services, Endpoints, Pods and Nodes. Each watch event updates the one
//! object it names in a [`ClusterState`] of persistent maps; once every kind
//! has listed, each batch of events is published as a copy sharing all the
//! rest.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use imbl::OrdMap;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
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

/// One watch event of one kind; boxed, since objects are kilobytes.
enum Change {
    Service(Box<Event<Service>>),
    Endpoints(Box<Event<Endpoints>>),
    Pod(Box<Event<Pod>>),
    Node(Box<Event<Node>>),
}

/// A watch of every object of kind `K`, events wrapped by `wrap`, errors logged
/// (the watcher retries with backoff).
fn watch_all<K>(client: &Client, wrap: fn(Event<K>) -> Change) -> impl Stream<Item = Change> + Send
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| async move {
            match event {
                Ok(event) => Some(wrap(event)),
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                    None
                }
            }
        })
}

/// One kind's part of the state, and its relist in progress.
struct Kind<V> {
    name: &'static str,
    synced: bool,
    relist: Option<OrdMap<String, V>>,
}

impl<V: Clone + PartialEq> Kind<V> {
    fn new(name: &'static str) -> Kind<V> {
        Kind {
            name,
            synced: false,
            relist: None,
        }
    }

    /// Applies one event to `map`; true when it changed what Pilot sees.
    fn apply<K>(
        &mut self,
        map: &mut OrdMap<String, V>,
        event: Event<K>,
        key_of: fn(&K) -> String,
        value_of: fn(K) -> V,
    ) -> bool {
        match event {
            Event::Apply(o) => {
                let k = key_of(&o);
                let v = value_of(o);
                if map.get(&k) == Some(&v) {
                    return false;
                }
                map.insert(k, v);
                true
            }
            Event::Delete(o) => map.remove(&key_of(&o)).is_some(),
            Event::Init => {
                self.relist = Some(OrdMap::new());
                false
            }
            Event::InitApply(o) => {
                let k = key_of(&o);
                self.relist.get_or_insert_default().insert(k, value_of(o));
                false
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                if !self.synced {
                    tracing::info!(
                        kind = self.name,
                        objects = listed.len(),
                        "Kubernetes cache synced"
                    );
                }
                self.synced = true;
                let changed = *map != listed;
                *map = listed;
                changed
            }
        }
    }
}

struct Caches {
    state: ClusterState,
    services: Kind<Service>,
    endpoints: Kind<Endpoints>,
    pods: Kind<PodInfo>,
    nodes: Kind<Node>,
}

impl Caches {
    fn new() -> Caches {
        Caches {
            state: ClusterState::default(),
            services: Kind::new("Service"),
            endpoints: Kind::new("Endpoints"),
            pods: Kind::new("Pod"),
            nodes: Kind::new("Node"),
        }
    }

    fn apply(&mut self, change: Change) -> bool {
        let s = &mut self.state;
        match change {
            Change::Service(e) => {
                self.services
                    .apply(&mut s.services, *e, |o| key(&o.metadata), slim)
            }
            Change::Endpoints(e) => {
                self.endpoints
                    .apply(&mut s.endpoints, *e, |o| key(&o.metadata), slim)
            }
            Change::Pod(e) => self.pods.apply(
                &mut s.pods,
                *e,
                |o: &Pod| key(&o.metadata),
                |p| PodInfo::from(&p),
            ),
            Change::Node(e) => self.nodes.apply(
                &mut s.nodes,
                *e,
                |o| o.metadata.name.clone().unwrap_or_default(),
                slim_node,
            ),
        }
    }

    fn synced(&self) -> bool {
        self.services.synced && self.endpoints.synced && self.pods.synced && self.nodes.synced
    }
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
            let changes = futures::stream::select_all([
                watch_all(&self.client, |e| Change::Service(Box::new(e))).boxed(),
                watch_all(&self.client, |e| Change::Endpoints(Box::new(e))).boxed(),
                watch_all(&self.client, |e| Change::Pod(Box::new(e))).boxed(),
                watch_all(&self.client, |e| Change::Node(Box::new(e))).boxed(),
            ]);
            // Batches: whatever arrived while the last batch was applied is one publish.
            let (tx, mut rx) = mpsc::channel(1024);
            let forward = changes.for_each(|c| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(c).await;
                }
            });
            let publish = async {
                let mut caches = Caches::new();
                let mut batch = Vec::new();
                while rx.recv_many(&mut batch, 1024).await > 0 {
                    let mut changed = false;
                    for change in batch.drain(..) {
                        changed |= caches.apply(change);
                    }
                    if caches.synced() && (changed || out.borrow().is_none()) {
                        out.send_replace(Some(Arc::new(caches.state.clone())));
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = forward => {}
                _ = publish => {}
            }
            Ok(())
        }
        .boxed()
    }
}

/// Drops what Pilot never reads: on a large cluster the caches are most of its memory.
/// The resource version goes too, so that an update that changes nothing
/// Pilot reads is recognised as no change at all.
fn slim<K: Resource>(mut o: K) -> K {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
    meta.resource_version = None;
    o
}

/// Keeps labels (locality) and addresses.
fn slim_node(node: Node) -> Node {
    let mut node = slim(node);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.conditions = None;
    }
    node
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Service, ServiceSpec};
    use kube::api::ObjectMeta;

    use super::*;

    fn svc(event: Event<Service>) -> Change {
        Change::Service(Box::new(event))
    }

    fn service(version: &str, cluster_ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("reviews".into()),
                namespace: Some("default".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_event_changes_the_one_object_it_names() {
        let mut caches = Caches::new();
        for change in [
            Event::Init,
            Event::InitApply(service("1", "10.0.0.1")),
            Event::InitDone,
        ] {
            caches.apply(svc(change));
        }
        let before = caches.state.clone();
        // A write that changed nothing Pilot reads: only the resource version moved.
        assert!(!caches.apply(svc(Event::Apply(service("2", "10.0.0.1")))));
        assert!(caches.apply(svc(Event::Apply(service("3", "10.0.0.2")))));
        assert_eq!(before.services.len(), 1, "the published copy is untouched");
        let spec = caches.state.services["default/reviews"]
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.0.0.2"));
        assert!(caches.apply(svc(Event::Delete(service("4", "10.0.0.2")))));
        assert!(caches.state.services.is_empty());
        assert!(
            !caches.synced(),
            "Endpoints, Pods and Nodes have not listed yet"
        );
    }

    #[test]
    fn a_relist_replaces_what_the_watch_missed() {
        let mut caches = Caches::new();
        caches.apply(svc(Event::Apply(service("1", "10.0.0.1"))));
        let relist = [Event::Init, Event::InitDone];
        let changed: Vec<bool> = relist.into_iter().map(|e| caches.apply(svc(e))).collect();
        assert_eq!(
            changed,
            [false, true],
            "the service deleted while disconnected is gone"
        );
        assert!(caches.state.services.is_empty());
    }
}
