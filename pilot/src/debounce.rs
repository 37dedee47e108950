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
        let mut registry = self.registry_model(&registry_rxs);
        let mut ctx = Arc::new(self.full(version, &registry, &config, std::time::Instant::now()));
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
                    let new = self.registry_model(&registry_rxs);
                    if new.same_services(&registry) {
                        registry = new;
                        version += 1;
                        let derived = ctx.with_endpoints(version, &registry, std::time::Instant::now());
                        ctx = Arc::new(derived);
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
                    ctx = Arc::new(self.full(version, &registry, &config, seen));
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

    fn full(
        &self,
        version: u64,
        registry: &ServiceModel,
        config: &Arc<ConfigSnapshot>,
        seen: std::time::Instant,
    ) -> PushContext {
        self.metrics
            .push_contexts
            .get_or_create(&vec![("kind", "full".into())])
            .inc();
        PushContext::build(
            version,
            registry,
            config.clone(),
            self.mesh.clone(),
            &self.domain,
            seen,
        )
    }

    /// Merges every registry's services; the first registry to name a host wins.
    fn registry_model(
        &self,
        registries: &[watch::Receiver<Option<Arc<ClusterState>>>],
    ) -> ServiceModel {
        let mut merged = ServiceModel::default();
        for r in registries {
            let Some(state) = r.borrow().clone() else {
                continue;
            };
            let model = state.to_model(&self.domain);
            for (host, svc) in model.services {
                if !merged.services.contains_key(&host) {
                    if let Some(i) = model.instances.get(&host) {
                        merged.instances.insert(host.clone(), i.clone());
                    }
                    merged.services.insert(host, svc);
                }
            }
            for (ip, w) in model.workloads {
                merged.workloads.entry(ip).or_insert(w);
            }
        }
        merged
    }
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
