//! Turns input changes into push contexts. Config and service changes are
//! debounced like Istio's (`PILOT_DEBOUNCE_AFTER` of quiet, at most
//! `PILOT_DEBOUNCE_MAX` from the first change); endpoint-only changes skip the
//! debounce and are pushed at once, reusing everything else.

use std::sync::Arc;
use std::time::Duration;

use api::mesh::MeshConfig;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigSnapshot;
use crate::model::ServiceModel;
use crate::registry::ClusterState;
use crate::xds::metrics::XdsMetrics;
use crate::xds::push::PushContext;

#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    pub after: Duration,
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce {
            after: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

pub struct Inputs {
    pub config: watch::Receiver<Option<Arc<ConfigSnapshot>>>,
    pub registries: Vec<watch::Receiver<Option<Arc<ClusterState>>>>,
}

#[derive(Clone)]
pub struct Builder {
    pub mesh: Arc<MeshConfig>,
    pub domain: String,
    pub debounce: Debounce,
    pub metrics: XdsMetrics,
}

impl Builder {
    /// Publishes the first context once every input has synced (then `ready`
    /// turns true), and a new one after every change, until `shutdown`.
    pub async fn run(
        self,
        inputs: Inputs,
        out: watch::Sender<Arc<PushContext>>,
        ready: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) {
        let Inputs {
            config: mut config_rx,
            registries: mut registry_rxs,
        } = inputs;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            synced = wait_for_sync(&mut config_rx, &mut registry_rxs) => if !synced { return },
        }
        let mut version = 1;
        let mut config = current_config(&config_rx);
        let mut registry = self.registry_model(&registry_rxs).await;
        // The services `ctx` was built from. An endpoint push is derived from
        // `ctx`, so it is only safe while the services still match these: a
        // service change that waits in the debounce must not have its
        // endpoints paired with the clusters of the push before it.
        let mut pushed_services = registry.clone();
        let mut ctx = self
            .full(version, &registry, &config, std::time::Instant::now())
            .await;
        out.send_replace(ctx.clone());
        ready.send_replace(true);
        tracing::info!(
            services = ctx.model.services.len(),
            configs = ctx.config.len(),
            "caches synced; serving xDS"
        );

        // When a debounced full push is pending: (first change, last change, when first seen).
        let mut pending: Option<(Instant, Instant, std::time::Instant)> = None;
        loop {
            let deadline = pending.map(|(first, last, _)| {
                (last + self.debounce.after).min(first + self.debounce.max)
            });
            let has_registries = !registry_rxs.is_empty();
            let registry_changed = async {
                let futures = registry_rxs.iter_mut().map(|r| Box::pin(r.changed()));
                futures::future::select_all(futures).await.0
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = config_rx.changed() => {
                    if r.is_err() { return }
                    let new = current_config(&config_rx);
                    if new != config {
                        config = new;
                        pending = Some(bump(pending));
                    }
                }
                r = registry_changed, if has_registries => {
                    if r.is_err() { return }
                    let new = self.registry_model(&registry_rxs).await;
                    if new.same_services(&pushed_services) {
                        registry = new;
                        pushed_services = registry.clone();
                        version += 1;
                        let (prev, model) = (ctx.clone(), registry.clone());
                        ctx = blocking(move || Arc::new(crate::xds::generate::endpoint_push(&prev, version, &model, std::time::Instant::now()))).await;
                        self.metrics.push_contexts.get_or_create(&vec![("kind", "eds".into())]).inc();
                        tracing::debug!(version, "endpoints changed; pushing at once");
                        out.send_replace(ctx.clone());
                    } else {
                        registry = new;
                        pending = Some(bump(pending));
                    }
                }
                _ = sleep_until(deadline) => {
                    let Some((_, _, seen)) = pending.take() else { continue };
                    version += 1;
                    ctx = self.full(version, &registry, &config, seen).await;
                    pushed_services = registry.clone();
                    tracing::info!(
                        version,
                        services = ctx.model.services.len(),
                        configs = ctx.config.len(),
                        "config changed; full push"
                    );
                    out.send_replace(ctx.clone());
                }
            }
        }
    }

    async fn full(
        &self,
        version: u64,
        registry: &ServiceModel,
        config: &Arc<ConfigSnapshot>,
        seen: std::time::Instant,
    ) -> Arc<PushContext> {
        self.metrics
            .push_contexts
            .get_or_create(&vec![("kind", "full".into())])
            .inc();
        let (this, registry, config) = (self.clone(), registry.clone(), config.clone());
        blocking(move || {
            Arc::new(crate::xds::generate::build_push(
                version,
                &registry,
                config,
                this.mesh.clone(),
                &this.domain,
                seen,
            ))
        })
        .await
    }

    /// Merges every registry's services; the first registry to name a host wins.
    async fn registry_model(
        &self,
        registries: &[watch::Receiver<Option<Arc<ClusterState>>>],
    ) -> ServiceModel {
        let states: Vec<Arc<ClusterState>> = registries
            .iter()
            .filter_map(|r| r.borrow().clone())
            .collect();
        let domain = self.domain.clone();
        blocking(move || merge_registries(&states, &domain)).await
    }
}

/// Runs a push context or model build (tens of milliseconds on a large mesh)
/// off the async workers, so ADS streams keep being served meanwhile.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn merge_registries(states: &[Arc<ClusterState>], domain: &str) -> ServiceModel {
    let mut merged = ServiceModel::default();
    let mut workloads = std::collections::HashMap::new();
    for state in states {
        let model = state.to_model(domain);
        for (host, svc) in model.services {
            if !merged.services.contains_key(&host) {
                if let Some(i) = model.instances.get(&host) {
                    merged.instances.insert(host.clone(), i.clone());
                }
                merged.services.insert(host, svc);
            }
        }
        if states.len() == 1 {
            workloads = Arc::unwrap_or_clone(model.workloads);
            continue;
        }
        for (ip, w) in model.workloads.iter() {
            workloads.entry(ip.clone()).or_insert_with(|| w.clone());
        }
    }
    merged.workloads = Arc::new(workloads);
    merged.finish()
}

fn bump(
    pending: Option<(Instant, Instant, std::time::Instant)>,
) -> (Instant, Instant, std::time::Instant) {
    let now = Instant::now();
    match pending {
        Some((first, _, seen)) => (first, now, seen),
        None => (now, now, std::time::Instant::now()),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => futures::future::pending().await,
    }
}

fn current_config(config: &watch::Receiver<Option<Arc<ConfigSnapshot>>>) -> Arc<ConfigSnapshot> {
    config.borrow().clone().unwrap_or_default()
}

/// Waits until config and every registry have published once. False if an input went away.
async fn wait_for_sync(
    config: &mut watch::Receiver<Option<Arc<ConfigSnapshot>>>,
    registries: &mut [watch::Receiver<Option<Arc<ClusterState>>>],
) -> bool {
    if config.wait_for(Option::is_some).await.is_err() {
        return false;
    }
    for r in registries.iter_mut() {
        if r.wait_for(Option::is_some).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dir::snapshot_from_texts;
    use crate::xds::fixtures::mesh_yaml;

    struct Harness {
        config: watch::Sender<Option<Arc<ConfigSnapshot>>>,
        registry: watch::Sender<Option<Arc<ClusterState>>>,
        out: watch::Receiver<Arc<PushContext>>,
        _shutdown: tokio_util::sync::DropGuard,
    }

    fn snapshot(services: usize, endpoints: usize) -> (Arc<ConfigSnapshot>, Arc<ClusterState>) {
        let snap = snapshot_from_texts(&[("m.yaml", &mesh_yaml(services, endpoints))]);
        (snap.config.clone(), snap.cluster.clone())
    }

    async fn start(debounce: Debounce) -> Harness {
        let (config, cluster) = snapshot(2, 2);
        let (config_tx, config_rx) = watch::channel(Some(config));
        let (registry_tx, registry_rx) = watch::channel(Some(cluster));
        let (out_tx, mut out) = watch::channel(Arc::new(crate::xds::generate::build_push(
            0,
            &ServiceModel::default(),
            Arc::default(),
            Arc::default(),
            "cluster.local",
            std::time::Instant::now(),
        )));
        let (ready_tx, _ready) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let builder = Builder {
            mesh: Arc::default(),
            domain: "cluster.local".into(),
            debounce,
            metrics: XdsMetrics::new(&mesh::metrics::Metrics::default()),
        };
        let inputs = Inputs {
            config: config_rx,
            registries: vec![registry_rx],
        };
        tokio::spawn(builder.run(inputs, out_tx, ready_tx, shutdown.clone()));
        out.wait_for(|p| p.version == 1).await.unwrap();
        Harness {
            config: config_tx,
            registry: registry_tx,
            out,
            _shutdown: shutdown.drop_guard(),
        }
    }

    fn edited_config(weight: u32) -> Arc<ConfigSnapshot> {
        let yaml = mesh_yaml(2, 2)
            .replace("weight: 90", &format!("weight: {weight}"))
            .replace("weight: 10", &format!("weight: {}", 100 - weight));
        snapshot_from_texts(&[("m.yaml", &yaml)]).config.clone()
    }

    #[tokio::test(start_paused = true)]
    async fn config_changes_wait_for_quiet() {
        let mut h = start(Debounce::default()).await;
        let t0 = Instant::now();
        h.config.send_replace(Some(edited_config(50)));
        h.out.changed().await.unwrap();
        let waited = t0.elapsed();
        assert!(h.out.borrow().is_full());
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_millis(150),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_of_changes_is_pushed_by_the_max_delay() {
        let mut h = start(Debounce {
            after: Duration::from_millis(100),
            max: Duration::from_millis(500),
        })
        .await;
        let t0 = Instant::now();
        let config = h.config.clone();
        tokio::spawn(async move {
            for i in 0..40u32 {
                config.send_replace(Some(edited_config(10 + i)));
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        });
        h.out.changed().await.unwrap();
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_millis(560),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn endpoint_changes_are_pushed_at_once() {
        let mut h = start(Debounce::default()).await;
        let (_, cluster) = snapshot(2, 2);
        let mut cluster = (*cluster).clone();
        // A pod goes away: its address leaves the Endpoints and the Pod is deleted.
        let eps = cluster.endpoints.get_mut("default/svc-1").unwrap();
        eps.subsets.as_mut().unwrap()[0]
            .addresses
            .as_mut()
            .unwrap()
            .pop();
        cluster.pods.remove("default/svc-1-1");
        let t0 = Instant::now();
        h.registry.send_replace(Some(Arc::new(cluster)));
        h.out.changed().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::ZERO);
        let push = h.out.borrow().clone();
        assert!(!push.is_full(), "an endpoint push, not a full one");
        assert_eq!(
            push.model.instances["svc-1.default.svc.cluster.local"].len(),
            1
        );
    }

    /// A new service waits in the debounce; an endpoint change arriving behind
    /// it must not be pushed on the previous push's clusters.
    #[tokio::test(start_paused = true)]
    async fn endpoints_behind_a_pending_service_change_wait_for_its_full_push() {
        let mut h = start(Debounce::default()).await;
        let (_, grown) = snapshot(3, 2);
        h.registry.send_replace(Some(grown.clone()));
        // Virtual time: lets the builder take the first change before the second.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut churned = (*grown).clone();
        let eps = churned.endpoints.get_mut("default/svc-2").unwrap();
        eps.subsets.as_mut().unwrap()[0]
            .addresses
            .as_mut()
            .unwrap()
            .pop();
        h.registry.send_replace(Some(Arc::new(churned)));
        h.out.changed().await.unwrap();
        let push = h.out.borrow().clone();
        assert!(
            push.is_full(),
            "the service change's own full push comes first"
        );
        assert!(
            push.outbound_clusters
                .iter()
                .any(|c| c.name == "outbound|8080||svc-2.default.svc.cluster.local")
        );
        assert_eq!(
            push.model.instances["svc-2.default.svc.cluster.local"].len(),
            1
        );
    }
}
