//! `pilot-discovery discovery`: flags, wiring and lifecycle.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::mesh::MeshConfig;
use clap::Args;
use mesh::tls::MountedCerts;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::dir::{DirLoader, DirSource};
use crate::config::mcp::McpSource;
use crate::config::{ConfigSource, NoConfig};
use crate::debounce::{Builder, Debounce, Inputs};
use crate::debug::{self, DebugState};
use crate::model::ServiceModel;
use crate::registry::ServiceRegistry;
use crate::registry::file::FileRegistry;
use crate::registry::kubernetes::KubernetesRegistry;
use crate::xds::metrics::XdsMetrics;
use crate::xds::plugin::Plugins;
use crate::xds::server::DiscoveryServer;
use crate::xds::server::grpc::AdsService;

pub const INFO: mesh::version::Info =
    mesh::version::Info::new("pilot-discovery", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Args)]
pub struct DiscoveryArgs {
    /// Service registries to read, comma separated: File, Kubernetes.
    #[arg(
        long = "registries",
        value_delimiter = ',',
        default_value = "Kubernetes"
    )]
    pub registries: Vec<String>,
    /// Directory of Istio config (and, for the File registry, Kubernetes objects).
    #[arg(long = "configDir")]
    pub config_dir: Option<PathBuf>,
    /// Mesh configuration file; Istio's defaults apply when it does not exist.
    #[arg(long = "meshConfig", default_value = "/etc/istio/config/mesh")]
    pub mesh_config: PathBuf,
    #[arg(long = "grpcAddr", default_value = ":15010")]
    pub grpc_addr: String,
    /// xDS over mutual TLS (`:15011` with `controlPlaneSecurityEnabled`);
    /// empty turns it off. Proxies must present a certificate from the
    /// mesh's roots.
    #[arg(long = "secureGrpcAddr", default_value = "")]
    pub secure_grpc_addr: String,
    /// Pilot's own `istio.<sa>` Secret as mounted, for `--secureGrpcAddr`:
    /// `cert-chain.pem`, `key.pem`, `root-cert.pem`, reloaded when they change.
    #[arg(long = "certDir", default_value = "/etc/certs")]
    pub cert_dir: PathBuf,
    #[arg(long = "httpAddr", default_value = ":8080")]
    pub http_addr: String,
    #[arg(long = "monitoringAddr", default_value = ":15014")]
    pub monitoring_addr: String,
    /// DNS domain suffix of services.
    #[arg(long = "domain", default_value = "cluster.local")]
    pub domain: String,
    /// Quiet time after a config change before pushing.
    #[arg(long, env = "PILOT_DEBOUNCE_AFTER", default_value = "100ms", value_parser = parse_duration)]
    pub debounce_after: Duration,
    /// How many streams generate and send at once.
    #[arg(long, env = "PILOT_PUSH_THROTTLE", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub push_throttle: u16,
    /// Longest a config change waits while changes keep coming.
    #[arg(long, env = "PILOT_DEBOUNCE_MAX", default_value = "10s", value_parser = parse_duration)]
    pub debounce_max: Duration,
}

/// An hour of quiet or of waiting is already far past any use; the bound keeps
/// the debounce's deadline arithmetic trivially in range.
fn parse_duration(s: &str) -> Result<Duration, String> {
    api::duration::parse_at_most(s, Duration::from_secs(3600))
}

/// Everything that can be checked before a port is bound.
pub struct Validated {
    pub mesh: MeshConfig,
    pub registries: Vec<String>,
}

pub fn validate(args: &DiscoveryArgs) -> anyhow::Result<Validated> {
    if args.debounce_after > args.debounce_max {
        anyhow::bail!(
            "PILOT_DEBOUNCE_AFTER ({}) is longer than PILOT_DEBOUNCE_MAX ({})",
            api::duration::format(args.debounce_after),
            api::duration::format(args.debounce_max)
        );
    }
    let mut registries = Vec::new();
    for r in &args.registries {
        match r.as_str() {
            "File" | "Kubernetes" => registries.push(r.clone()),
            other => anyhow::bail!(
                "--registries: unknown registry {other:?} (expected File or Kubernetes)"
            ),
        }
    }
    if registries.iter().any(|r| r == "File") && args.config_dir.is_none() {
        anyhow::bail!("--registries File reads its objects from --configDir, which is not set");
    }
    if let Some(dir) = &args.config_dir
        && !dir.is_dir()
    {
        anyhow::bail!("--configDir {}: not a directory", dir.display());
    }
    let mesh = match std::fs::read_to_string(&args.mesh_config) {
        Ok(text) => MeshConfig::parse(&text)
            .map_err(|e| anyhow::anyhow!("--meshConfig {}: {e}", args.mesh_config.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %args.mesh_config.display(), "no mesh config file; using defaults");
            MeshConfig::default()
        }
        Err(e) => anyhow::bail!("--meshConfig {}: {e}", args.mesh_config.display()),
    };
    Ok(Validated { mesh, registries })
}

pub async fn run(
    args: DiscoveryArgs,
    valid: Validated,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics_registry = mesh::metrics::Metrics::default();
    let xds_metrics = XdsMetrics::new(&metrics_registry);
    let grpc = mesh::server::bind(&args.grpc_addr, "grpcAddr").await?;
    let secure = if args.secure_grpc_addr.is_empty() {
        None
    } else {
        let listener = mesh::server::bind(&args.secure_grpc_addr, "secureGrpcAddr").await?;
        let certs = MountedCerts::in_dir(&args.cert_dir);
        let config = certs
            .watch(shutdown.clone())
            .map_err(|e| anyhow::anyhow!("--secureGrpcAddr needs --certDir: {e}"))?;
        tracing::info!(addr = %listener.local_addr()?, cert_dir = %args.cert_dir.display(), "xDS over mutual TLS");
        Some((listener, config))
    };
    let http = mesh::server::bind(&args.http_addr, "httpAddr").await?;
    let monitoring = mesh::server::bind(&args.monitoring_addr, "monitoringAddr").await?;
    tracing::info!(
        grpc = %grpc.local_addr()?, http = %http.local_addr()?, monitoring = %monitoring.local_addr()?,
        registries = ?valid.registries, config_dir = ?args.config_dir,
        "pilot-discovery listening"
    );

    let mut tasks = tokio::task::JoinSet::new();

    let (dir_tx, dir_rx) = watch::channel(None);
    let (config_tx, config_rx) = watch::channel(None);
    if let Some(dir) = &args.config_dir {
        tasks.spawn(DirLoader::new(dir).watch(dir_tx, shutdown.clone()));
    }
    let config_sources = valid.mesh.config_sources.clone();
    let source: Box<dyn ConfigSource> = if !config_sources.is_empty() {
        Box::new(McpSource::new(
            config_sources,
            args.cert_dir.clone(),
            "pilot-discovery".into(),
        ))
    } else if args.config_dir.is_some() {
        Box::new(DirSource::new(dir_rx.clone()))
    } else {
        Box::new(NoConfig)
    };
    tracing::info!(source = source.name(), "starting config source");
    tracing::info!(plugins = ?Plugins::standard().names(), "xDS plug-ins");
    tasks.spawn(source.run(config_tx, shutdown.clone()));

    let mut registry_rxs = Vec::new();
    for name in &valid.registries {
        let registry: Box<dyn ServiceRegistry> = match name.as_str() {
            "File" => Box::new(FileRegistry::new(dir_rx.clone())),
            _ => {
                let client = kube::Client::try_default().await.context(
                    "--registries Kubernetes: no usable kubeconfig or in-cluster config",
                )?;
                Box::new(KubernetesRegistry::new(client))
            }
        };
        let (tx, rx) = watch::channel(None);
        tracing::info!(registry = registry.name(), "starting service registry");
        tasks.spawn(registry.run(tx, shutdown.clone()));
        registry_rxs.push(rx);
    }

    let mesh = Arc::new(valid.mesh);
    let empty = crate::xds::generate::build_push(
        0,
        &ServiceModel::default(),
        Arc::default(),
        mesh.clone(),
        &args.domain,
        Instant::now(),
    );
    let (push_tx, push_rx) = watch::channel(Arc::new(empty));
    let (ready_tx, ready_rx) = watch::channel(false);
    let builder = Builder {
        mesh,
        domain: args.domain.clone(),
        debounce: Debounce {
            after: args.debounce_after,
            max: args.debounce_max,
        },
        metrics: xds_metrics.clone(),
    };
    let inputs = Inputs {
        config: config_rx,
        registries: registry_rxs,
    };
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            builder.run(inputs, push_tx, ready_tx, shutdown).await;
            Ok(())
        });
    }

    let server = DiscoveryServer::new(
        push_rx.clone(),
        ready_rx.clone(),
        xds_metrics,
        shutdown.clone(),
        usize::from(args.push_throttle),
    );
    let debug_state = DebugState {
        ready: ready_rx,
        shutdown: shutdown.clone(),
        push: push_rx,
        dir: args.config_dir.as_ref().map(|_| dir_rx.clone()),
        clients: server.clients(),
    };
    if let Some((listener, config)) = secure {
        let shutdown = shutdown.clone();
        let server = server.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(AdsService::new(server))
                .serve_with_incoming_shutdown(
                    mesh::tls::incoming(listener, config, shutdown.clone()),
                    shutdown.cancelled(),
                )
                .await
                .context("xDS mutual-TLS gRPC server failed")
        });
    }
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(AdsService::new(server))
                .serve_with_incoming_shutdown(
                    mesh::server::incoming_nodelay(grpc),
                    shutdown.cancelled(),
                )
                .await
                .context("xDS gRPC server failed")
        });
    }
    tasks.spawn(mesh_http(
        http,
        debug::router(debug_state),
        shutdown.clone(),
    ));
    tasks.spawn(mesh_http(
        monitoring,
        mesh::server::monitoring_router(metrics_registry, INFO),
        shutdown.clone(),
    ));

    // The first task to fail takes the service down; a clean shutdown drains them all.
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.cancel();
                return Err(e);
            }
            Err(e) => {
                shutdown.cancel();
                return Err(e.into());
            }
        }
    }
    tracing::info!("pilot-discovery stopped");
    Ok(())
}

async fn mesh_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    mesh::server::serve_http(listener, router, shutdown).await?;
    Ok(())
}
