//! `mixer-policy server`: Istio's `mixs server` flags, wiring and lifecycle.

use std::sync::Arc;

use axum::routing::get;
use clap::Args;
use mixer::adapter::kubernetesenv::KubernetesEnv;
use mixer::dispatch::Dispatcher;
use mixer::server::{MixsArgs, Validated};
use tokio_util::sync::CancellationToken;

use crate::metrics::PolicyMetrics;
use crate::serve::Policy;

pub const INFO: mesh::version::Info =
    mesh::version::Info::new("mixer-policy", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub mixs: MixsArgs,
    /// Check answers kept in the server-side cache (0 turns it off).
    #[arg(long = "numCheckCacheEntries", default_value_t = 100_000)]
    pub check_cache_entries: usize,
}

pub fn validate(args: &ServerArgs) -> anyhow::Result<Validated> {
    args.mixs.validate().map_err(anyhow::Error::msg)
}

pub async fn run(
    args: ServerArgs,
    valid: Validated,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grpc_listener = mesh::server::bind(&valid.grpc.to_string(), "address").await?;
    let monitoring_listener =
        mesh::server::bind(&valid.monitoring.to_string(), "monitoringPort").await?;
    tracing::info!(grpc = %valid.grpc, monitoring = %valid.monitoring, "listening");

    let registry = mesh::metrics::Metrics::default();
    let metrics = PolicyMetrics::new(&registry);
    let (kubernetesenv, pods) = KubernetesEnv::start(valid.config_dir(), shutdown.clone()).await;
    let store = {
        let m = metrics.clone();
        mixer::server::start_config(
            &args.mixs,
            &valid,
            Default::default(),
            crate::adapter::registry(kubernetesenv),
            move |s| {
                m.config_errors.set(s.errors.len() as i64);
                m.config_generation.set(s.generation as i64);
            },
            shutdown.clone(),
        )
    };
    let (current, watcher, synced) = (store.current, store.task, store.synced);
    let dispatcher = Arc::new(Dispatcher::new(
        current.clone(),
        args.mixs.adapter_deadline,
        args.check_cache_entries,
    ));
    let policy = Policy {
        dispatcher: dispatcher.clone(),
        metrics: metrics.clone(),
    };
    let configz = move || {
        let z = mixer::server::configz(&current);
        async move { axum::Json(z) }
    };
    let router = mesh::server::monitoring_router(registry, INFO)
        .route(
            "/ready",
            get(move || {
                let answer = mixer::server::ready(&synced);
                async move { answer }
            }),
        )
        .route("/debug/configz", get(configz));
    let monitoring = tokio::spawn(mesh::server::serve_http(
        monitoring_listener,
        router,
        shutdown.clone(),
    ));

    let threads = mesh::server::cores();
    tracing::info!(
        threads,
        "serving istio.mixer.v1.Mixer and envoy.service.auth.v3.Authorization"
    );
    mesh::grpc::serve_per_thread("check", grpc_listener, threads, shutdown.clone(), policy).await?;
    tracing::info!("gRPC server stopped; draining");
    shutdown.cancel();
    let _ = watcher.await;
    let _ = pods.await;
    let _ = monitoring.await;
    Ok(())
}
