//! `mixer-telemetry server`: Istio's `mixs server` flags, wiring and
//! lifecycle. Three ports on one host: gRPC (Report and the access log
//! service), monitoring (its own metrics), and the prometheus adapter's
//! mesh metrics (42422).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::als_wire::access_log_service_server::AccessLogServiceServer;
use api::mixer_wire::mixer_server::MixerServer;
use axum::routing::get;
use clap::Args;
use mixer::adapter::kubernetesenv::KubernetesEnv;
use mixer::config::parse_file;
use mixer::config::store::Base;
use mixer::dispatch::Dispatcher;
use mixer::server::{MixsArgs, Validated};
use tokio_util::sync::CancellationToken;

use crate::adapter::Background;
use crate::adapter::prometheus::MeshMetrics;
use crate::ingest::Ingest;
use crate::metrics::TelemetryMetrics;
use crate::serve::Telemetry;

pub const INFO: mesh::version::Info =
    mesh::version::Info::new("mixer-telemetry", env!("CARGO_PKG_VERSION"));

/// Istio's default telemetry config: attribute manifests, the kubernetesenv
/// rule, the standard metrics with their prometheus handler, and the access
/// log. Objects of the config store with the same names replace these.
pub const DEFAULT_CONFIG: &str = include_str!("../../deploy/config/telemetry.yaml");

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub mixs: MixsArgs,
    /// The prometheus adapter's port, on the same host as --address.
    #[arg(long = "prometheusPort", default_value_t = 42422)]
    pub prometheus_port: u16,
    /// Load the default telemetry config under the config store's.
    #[arg(long = "loadDefaultConfig", default_value_t = true, action = clap::ArgAction::Set)]
    pub load_default_config: bool,
    /// Tasks dispatching reports to adapters (0: one per core).
    #[arg(long = "reportWorkers", default_value_t = 0)]
    pub report_workers: usize,
    /// Batches each worker's queue holds before reports are dropped.
    #[arg(long = "reportQueueDepth", default_value_t = 1024)]
    pub report_queue_depth: usize,
}

pub struct Addresses {
    pub mixs: Validated,
    pub prometheus: SocketAddr,
}

pub fn validate(args: &ServerArgs) -> anyhow::Result<Addresses> {
    let mixs = args.mixs.validate().map_err(anyhow::Error::msg)?;
    let prometheus = args.mixs.on_host(&mixs.grpc, args.prometheus_port);
    Ok(Addresses { mixs, prometheus })
}

/// The default config's objects; it is part of the binary, so an error in
/// it is a bug, reported and skipped like any bad object.
fn default_config(args: &ServerArgs) -> Base {
    if !args.load_default_config {
        return Base::default();
    }
    let ns = &args.mixs.config_default_namespace;
    let mut objects = Vec::new();
    for r in parse_file("(default telemetry config)", DEFAULT_CONFIG, ns) {
        match r {
            Ok(o) => objects.push(o),
            Err(e) => {
                tracing::error!(object = %e.object, field = %e.field, "default config: {}", e.message)
            }
        }
    }
    Base::new(objects)
}

pub async fn run(
    args: ServerArgs,
    valid: Addresses,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addrs = &valid.mixs;
    let grpc_listener = mesh::server::bind(&addrs.grpc.to_string(), "address").await?;
    let monitoring_listener =
        mesh::server::bind(&addrs.monitoring.to_string(), "monitoringPort").await?;
    let prometheus_listener =
        mesh::server::bind(&valid.prometheus.to_string(), "prometheusPort").await?;
    tracing::info!(grpc = %addrs.grpc, monitoring = %addrs.monitoring, prometheus = %valid.prometheus, "listening");

    let registry = mesh::metrics::Metrics::default();
    let metrics = TelemetryMetrics::new(&registry);
    let mesh_metrics = MeshMetrics::default();
    let background = Background::new(&registry);
    let (kubernetesenv, pods) = KubernetesEnv::start(addrs.config_dir(), shutdown.clone()).await;
    let store = {
        let m = metrics.clone();
        mixer::server::start_config(
            &args.mixs,
            addrs,
            default_config(&args),
            crate::adapter::registry(kubernetesenv, mesh_metrics.clone(), &background),
            move |s| {
                m.config_errors.set(s.errors.len() as i64);
                m.config_generation.set(s.generation as i64);
            },
            shutdown.clone(),
        )
    };
    let (current, watcher, synced) = (store.current, store.task, store.synced);
    // The report path has no check cache.
    let dispatcher = Arc::new(Dispatcher::new(
        current.clone(),
        args.mixs.adapter_deadline,
        0,
    ));
    let workers = match args.report_workers {
        0 => mesh::server::cores(),
        n => n,
    };
    let (ingest, work) = Ingest::start(
        dispatcher.clone(),
        metrics.clone(),
        workers,
        args.report_queue_depth,
    );
    tracing::info!(
        workers,
        depth = args.report_queue_depth,
        "report queues ready"
    );
    let telemetry = Telemetry {
        dispatcher,
        ingest,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    };
    let sweeper = tokio::spawn(sweep(
        mesh_metrics.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

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
    let exposition = axum::Router::new().route(
        "/metrics",
        get(move || {
            let text = mesh_metrics.render();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    let prometheus = tokio::spawn(mesh::server::serve_http(
        prometheus_listener,
        exposition,
        shutdown.clone(),
    ));

    tracing::info!(
        "serving istio.mixer.v1.Mixer/Report and envoy.service.accesslog.v3.AccessLogService"
    );
    tonic::transport::Server::builder()
        .add_service(MixerServer::new(telemetry.clone()))
        .add_service(AccessLogServiceServer::new(telemetry))
        .serve_with_incoming_shutdown(
            mesh::server::incoming_nodelay(grpc_listener),
            shutdown.clone().cancelled_owned(),
        )
        .await
        .context("gRPC server")?;
    // The services (and their queues' senders) are gone: what was accepted
    // is dispatched before exit.
    tracing::info!("gRPC server stopped; dispatching what was accepted");
    shutdown.cancel();
    for w in work {
        let _ = w.await;
    }
    // Then the adapters' own buffers get their last chance to send.
    background.finish(Duration::from_secs(10)).await;
    let _ = watcher.await;
    let _ = pods.await;
    let _ = sweeper.await;
    let _ = monitoring.await;
    let _ = prometheus.await;
    Ok(())
}

/// Drops idle mesh series (each handler's `metricsExpiryDuration`) and
/// keeps the series gauge current.
async fn sweep(mesh: MeshMetrics, metrics: TelemetryMetrics, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expired = mesh.expire(Instant::now());
        metrics.expired_series.inc_by(expired as u64);
        metrics.mesh_series.set(mesh.series() as i64);
    }
}

#[cfg(test)]
mod tests {
    use mixer::adapter::kubernetesenv::PodIndex;
    use mixer::config::Snapshot;

    use super::*;

    #[test]
    fn the_default_config_loads_without_errors() {
        let base = default_config(&ServerArgs {
            mixs: MixsArgs {
                config_store_url: String::new(),
                config_default_namespace: "istio-system".into(),
                port: 9091,
                address: None,
                monitoring_port: 15014,
                cert_dir: "/etc/certs".into(),
                adapter_deadline: Duration::from_secs(1),
            },
            prometheus_port: 42422,
            load_default_config: true,
            report_workers: 1,
            report_queue_depth: 1,
        });
        let registry = crate::adapter::registry(
            KubernetesEnv::new(PodIndex::default()),
            MeshMetrics::default(),
            &Background::new(&mesh::metrics::Metrics::default()),
        );
        let objects = base.objects();
        let s = Snapshot::build(
            &objects,
            Vec::new(),
            &Snapshot::empty("istio-system"),
            &registry,
        );
        assert!(s.errors.is_empty(), "{:#?}", s.errors);
        assert_eq!(s.rules.len(), 7);
        assert!(s.generates);
    }
}
