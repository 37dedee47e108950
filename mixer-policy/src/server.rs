//! `mixer-policy server`: Istio's `mixs server` flags, wiring and lifecycle.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::mixer::mixer_server::MixerServer;
use axum::routing::get;
use clap::Args;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use mixer::config::store::{self, Current};
use mixer::dispatch::Dispatcher;
use tokio_util::sync::CancellationToken;

use crate::metrics::PolicyMetrics;
use crate::serve::Policy;

pub const INFO: mesh::version::Info =
    mesh::version::Info::new("mixer-policy", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Where config lives: fs:///dir.
    #[arg(long = "configStoreURL")]
    pub config_store_url: String,
    /// The namespace whose rules apply to every namespace.
    #[arg(long = "configDefaultNamespace", default_value = "istio-system")]
    pub config_default_namespace: String,
    /// gRPC port, on all interfaces unless --address says otherwise.
    #[arg(long = "port", default_value_t = 9091)]
    pub port: u16,
    /// One address to serve on, `tcp://host:port`; the monitoring port is
    /// bound on the same host.
    #[arg(long = "address")]
    pub address: Option<String>,
    #[arg(long = "monitoringPort", default_value_t = 15014)]
    pub monitoring_port: u16,
    /// Check answers kept in the server-side cache (0 turns it off).
    #[arg(long = "numCheckCacheEntries", default_value_t = 100_000)]
    pub check_cache_entries: usize,
    /// Longest an adapter may take to answer.
    #[arg(long = "adapterDeadline", default_value = "1s", value_parser = parse_deadline)]
    pub adapter_deadline: Duration,
}

fn parse_deadline(s: &str) -> Result<Duration, String> {
    let d = api::duration::parse_at_most(s, Duration::from_secs(60))?;
    if d.is_zero() {
        return Err("must be positive".into());
    }
    Ok(d)
}

/// What is checked before any port is bound.
pub struct Validated {
    pub config_dir: PathBuf,
    pub grpc: SocketAddr,
    pub monitoring: SocketAddr,
}

pub fn validate(args: &ServerArgs) -> anyhow::Result<Validated> {
    let config_dir = store::parse_url(&args.config_store_url)
        .map_err(|e| anyhow::anyhow!("--configStoreURL: {e}"))?;
    if !config_dir.is_dir() {
        anyhow::bail!(
            "--configStoreURL: {} is not a directory",
            config_dir.display()
        );
    }
    let grpc: SocketAddr = match &args.address {
        Some(a) => {
            let hostport = a
                .strip_prefix("tcp://")
                .ok_or_else(|| anyhow::anyhow!("--address {a:?}: expected tcp://host:port"))?;
            hostport
                .parse()
                .map_err(|e| anyhow::anyhow!("--address {a:?}: {e}"))?
        }
        None => SocketAddr::from(([0, 0, 0, 0], args.port)),
    };
    let monitoring = SocketAddr::new(grpc.ip(), args.monitoring_port);
    Ok(Validated {
        config_dir,
        grpc,
        monitoring,
    })
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
    let adapters = crate::adapter::registry();
    let ns = args.config_default_namespace.clone();
    tracing::info!(dir = %valid.config_dir.display(), namespace = %ns, "loading config");
    let first = store::initial(&valid.config_dir, &ns, &adapters);
    metrics.config_errors.set(first.errors.len() as i64);
    metrics.config_generation.set(first.generation as i64);
    let current = Current::new(first);
    let dispatcher = Arc::new(Dispatcher::new(
        current.clone(),
        args.adapter_deadline,
        args.check_cache_entries,
    ));
    let policy = Policy {
        dispatcher: dispatcher.clone(),
        metrics: metrics.clone(),
    };

    let watcher = {
        let m = metrics.clone();
        let watch = store::watch(
            valid.config_dir.clone(),
            ns,
            adapters,
            current.clone(),
            move |s| {
                m.config_errors.set(s.errors.len() as i64);
                m.config_generation.set(s.generation as i64);
            },
            shutdown.clone(),
        );
        // A watch that cannot start (inotify limits, say) is said at once:
        // the loaded config keeps serving, but edits will not be seen.
        tokio::spawn(async move {
            if let Err(e) = watch.await {
                tracing::error!("cannot watch the config directory; edits will not be seen: {e}");
            }
        })
    };

    let configz = {
        let current = current.clone();
        move || {
            let current = current.clone();
            async move {
                let s = current.get();
                axum::Json(serde_json::json!({
                    "generation": s.generation,
                    "objects": s.objects,
                    "rules": s.rules.iter().map(|r| &r.name).collect::<Vec<_>>(),
                    "handlers": s.handlers.keys().collect::<Vec<_>>(),
                    "errors": s.errors,
                }))
            }
        }
    };
    let router = mesh::server::monitoring_router(registry, INFO)
        .route("/ready", get(|| async { "ready" }))
        .route("/debug/configz", get(configz));
    let monitoring = tokio::spawn(mesh::server::serve_http(
        monitoring_listener,
        router,
        shutdown.clone(),
    ));

    tracing::info!("serving istio.mixer.v1.Mixer and envoy.service.auth.v3.Authorization");
    let serve = tonic::transport::Server::builder()
        .add_service(MixerServer::new(policy.clone()))
        .add_service(AuthorizationServer::new(policy))
        .serve_with_incoming_shutdown(
            mesh::server::incoming_nodelay(grpc_listener),
            shutdown.clone().cancelled_owned(),
        );
    serve.await.context("gRPC server")?;
    tracing::info!("gRPC server stopped; draining");
    shutdown.cancel();
    let _ = watcher.await;
    let _ = monitoring.await;
    Ok(())
}
