//! `galley server`: Istio 1.4's flags, the config source, the MCP server,
//! the validating webhook, the monitoring port and the probe files.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use axum::http::StatusCode;
use clap::Args;
use futures::TryFutureExt;
use mesh::webhook::{CertFiles, Reloading, keep_certificate, touch_health_file};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::mcp::{AccessList, Source};
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::source::dir::DirSource;
use crate::webhook::{self, Endpoint, State};

/// Istio's flags as Go parses them: booleans that also take a value
/// (`--insecure`, `--insecure=true`, `--enable-validation=false`).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// A directory of YAML to serve instead of the Kubernetes API server's
    /// Istio CRDs.
    #[arg(long = "configPath")]
    pub config_path: Option<PathBuf>,
    /// The mesh config; defaults apply when the file is absent.
    #[arg(long = "meshConfigFile", default_value = "/etc/mesh-config/mesh")]
    pub mesh_config_file: PathBuf,
    /// Serve config over MCP.
    #[arg(long = "enable-server", default_value = "true", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_server: bool,
    /// Serve the validating admission webhook.
    #[arg(long = "enable-validation", default_value = "true", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_validation: bool,
    /// The ValidatingWebhookConfiguration Galley keeps registered, its
    /// caBundle set from --caCertFile.
    #[arg(long = "validation-webhook-config-file")]
    pub validation_webhook_config_file: Option<PathBuf>,
    #[arg(long = "validation-port", default_value_t = 443)]
    pub validation_port: u16,
    /// MCP without TLS.
    #[arg(long = "insecure", default_value = "false", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub insecure: bool,
    /// Where MCP is served; the webhook and monitoring ports are bound on
    /// the same host.
    #[arg(long = "server-address", default_value = "tcp://0.0.0.0:9901")]
    pub server_address: String,
    #[arg(long = "tlsCertFile", default_value = "/etc/certs/cert-chain.pem")]
    pub tls_cert_file: PathBuf,
    #[arg(long = "tlsKeyFile", default_value = "/etc/certs/key.pem")]
    pub tls_key_file: PathBuf,
    #[arg(long = "caCertFile", default_value = "/etc/certs/root-cert.pem")]
    pub ca_cert_file: PathBuf,
    /// The SPIFFE identities allowed to open MCP streams (with TLS).
    #[arg(long = "accessListFile", default_value = "/etc/config/accesslist.yaml")]
    pub access_list_file: PathBuf,
    #[arg(long = "monitoringPort", default_value_t = 15014)]
    pub monitoring_port: u16,
    /// Where Galley runs; the webhook configuration is owned by this namespace.
    #[arg(long = "deployment-namespace", default_value = "istio-system")]
    pub deployment_namespace: String,
    /// Touched while Galley runs (`galley probe --probe-path`).
    #[arg(long = "livenessProbePath")]
    pub liveness_probe_path: Option<PathBuf>,
    #[arg(long = "livenessProbeInterval", default_value = "1s", value_parser = api::duration::parse)]
    pub liveness_probe_interval: Duration,
    /// Touched while Galley is ready: config loaded and, with validation,
    /// the webhook's certificate too.
    #[arg(long = "readinessProbePath")]
    pub readiness_probe_path: Option<PathBuf>,
    #[arg(long = "readinessProbeInterval", default_value = "1s", value_parser = api::duration::parse)]
    pub readiness_probe_interval: Duration,
}

/// What is checked before anything is bound.
pub struct Validated {
    pub mcp: SocketAddr,
    pub validation: SocketAddr,
    pub monitoring: SocketAddr,
    pub mesh: api::mesh::MeshConfig,
    pub access: Option<AccessList>,
}

impl ServerArgs {
    pub fn validate(&self) -> anyhow::Result<Validated> {
        let mcp: SocketAddr = self
            .server_address
            .strip_prefix("tcp://")
            .with_context(|| {
                format!(
                    "--server-address {:?}: expected tcp://host:port",
                    self.server_address
                )
            })?
            .parse()
            .with_context(|| format!("--server-address {:?}", self.server_address))?;
        let mesh = match std::fs::read_to_string(&self.mesh_config_file) {
            Ok(text) => api::mesh::MeshConfig::parse(&text).map_err(|e| {
                anyhow::anyhow!("--meshConfigFile {}: {e}", self.mesh_config_file.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %self.mesh_config_file.display(), "no mesh config file; using defaults");
                api::mesh::MeshConfig::default()
            }
            Err(e) => anyhow::bail!("--meshConfigFile {}: {e}", self.mesh_config_file.display()),
        };
        if let Some(dir) = &self.config_path
            && !dir.is_dir()
        {
            anyhow::bail!("--configPath {}: not a directory", dir.display());
        }
        let access = if self.insecure || !self.enable_server {
            None
        } else {
            Some(
                AccessList::load(&self.access_list_file)
                    .map_err(|e| anyhow::anyhow!("--accessListFile {e}"))?,
            )
        };
        Ok(Validated {
            validation: SocketAddr::new(mcp.ip(), self.validation_port),
            monitoring: SocketAddr::new(mcp.ip(), self.monitoring_port),
            mcp,
            mesh,
            access,
        })
    }
}

pub async fn run(
    args: ServerArgs,
    valid: Validated,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    mesh::tls::install_crypto_provider();
    let metrics = Metrics::new();
    let monitoring = mesh::server::bind(&valid.monitoring.to_string(), "monitoringPort").await?;
    let mcp_listener = if args.enable_server {
        Some(mesh::server::bind(&valid.mcp.to_string(), "server-address").await?)
    } else {
        None
    };

    let (tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
    let (synced_tx, synced) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    match &args.config_path {
        Some(dir) => {
            tracing::info!(dir = %dir.display(), "config source: directory");
            tasks.spawn(DirSource::new(dir).watch(tx, synced_tx, shutdown.clone()));
        }
        None => {
            tracing::info!("config source: Kubernetes");
            let client = kube::Client::try_default()
                .await
                .context("no --configPath, and no usable kubeconfig or in-cluster config")?;
            tasks.spawn(crate::source::kube::KubeSource::new(client).watch(
                tx,
                synced_tx,
                shutdown.clone(),
            ));
        }
    }
    {
        let metrics = metrics.clone();
        let mut snapshots = snapshots.clone();
        tasks.spawn(async move {
            loop {
                let s = snapshots.borrow_and_update().clone();
                metrics.resources.set(s.len() as i64);
                metrics.rejected.set(s.errors.len() as i64);
                if snapshots.changed().await.is_err() {
                    return Ok(());
                }
            }
        });
    }

    let certs = Arc::new(Reloading::default());
    if args.enable_validation {
        let loaded = metrics.clone();
        tokio::spawn(keep_certificate(
            CertFiles {
                cert: args.tls_cert_file.clone(),
                key: args.tls_key_file.clone(),
            },
            certs.clone(),
            move || {
                loaded.certificate_loaded.set(1);
            },
            shutdown.clone(),
        ));
    }
    let ready = {
        let certs = certs.clone();
        let synced = synced.clone();
        let validation = args.enable_validation;
        move || -> Result<(), &'static str> {
            if !*synced.borrow() {
                return Err("config not loaded yet");
            }
            if validation && !certs.loaded() {
                return Err("no webhook certificate yet");
            }
            Ok(())
        }
    };
    if let Some(file) = args.liveness_probe_path.clone() {
        tokio::spawn(touch_health_file(
            file,
            args.liveness_probe_interval,
            shutdown.clone(),
        ));
    }
    if let Some(file) = args.readiness_probe_path.clone() {
        let ready = ready.clone();
        tokio::spawn(mesh::webhook::touch_while(
            file,
            args.readiness_probe_interval,
            move || ready().is_ok(),
            shutdown.clone(),
        ));
    }
    let router = mesh::server::monitoring_router(metrics.registry.clone(), crate::INFO).route(
        "/ready",
        axum::routing::get(move || {
            let state = ready();
            async move {
                match state {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }
        }),
    );
    tasks.spawn(
        mesh::server::serve_http(monitoring, router, shutdown.clone()).map_err(anyhow::Error::from),
    );

    if let Some(listener) = mcp_listener {
        let source = Source::new(
            snapshots.clone(),
            synced.clone(),
            metrics.clone(),
            valid.access.clone(),
            shutdown.clone(),
        );
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)));
        let shutdown = shutdown.clone();
        if args.insecure {
            tracing::info!(addr = %valid.mcp, "MCP server (plaintext, --insecure)");
            tasks.spawn(async move {
                builder
                    .add_service(source.into_server())
                    .serve_with_incoming_shutdown(
                        mesh::server::incoming_nodelay(listener),
                        shutdown.cancelled(),
                    )
                    .await?;
                Ok(())
            });
        } else {
            let certs = mesh::tls::MountedCerts {
                cert: args.tls_cert_file.clone(),
                key: args.tls_key_file.clone(),
                ca: args.ca_cert_file.clone(),
            };
            let config = certs
                .watch(shutdown.clone())
                .map_err(|e| anyhow::anyhow!("MCP over mutual TLS needs --tlsCertFile, --tlsKeyFile and --caCertFile (or --insecure): {e}"))?;
            tracing::info!(addr = %valid.mcp, "MCP server (mutual TLS)");
            tasks.spawn(async move {
                builder
                    .add_service(source.into_server())
                    .serve_with_incoming_shutdown(
                        mesh::tls::incoming(listener, config, shutdown.clone()),
                        shutdown.cancelled(),
                    )
                    .await?;
                Ok(())
            });
        }
    }

    if args.enable_validation {
        let state = web::Data::new(State {
            snapshots: snapshots.clone(),
            metrics: metrics.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(8 << 20))
                .route("/admitpilot", web::post().to(admit_pilot))
                .route("/admitmixer", web::post().to(admit_mixer))
        })
        .disable_signals()
        .tcp_nodelay(true)
        .shutdown_timeout(5)
        .workers(2)
        .bind_rustls_0_23(valid.validation, certs.server_config())
        .with_context(|| format!("cannot listen on {} (--validation-port)", valid.validation))?
        .run();
        tracing::info!(addr = %valid.validation, "validation webhook on /admitpilot and /admitmixer");
        let handle = server.handle();
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            stopper.cancelled().await;
            handle.stop(true).await;
        });
        tasks.spawn(async move {
            server.await.context("validation webhook")?;
            Ok(())
        });
        if let Some(file) = &args.validation_webhook_config_file {
            tasks.spawn(crate::registration::keep_registered(
                file.clone(),
                args.ca_cert_file.clone(),
                args.deployment_namespace.clone(),
                certs.clone(),
                shutdown.clone(),
            ));
        }
    }
    if !args.enable_validation
        && let Some(file) = args.validation_webhook_config_file.clone()
    {
        tasks.spawn(async move {
            // Validation turned off: a configuration left behind would
            // refuse every Istio object with no webhook to answer it.
            if let Ok(client) = kube::Client::try_default().await {
                let text = std::fs::read_to_string(&file)?;
                match crate::registration::remove(&client, &text).await {
                    Ok(()) => tracing::info!("validation off: webhook configuration removed"),
                    Err(e) => tracing::error!(
                        "validation off, but the webhook configuration could not be removed: {e}"
                    ),
                }
            }
            Ok(())
        });
    }
    tracing::info!(monitoring = %valid.monitoring, "galley started");
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::error!("{e:#}");
            result = Err(e);
            shutdown.cancel();
        }
    }
    result
}

async fn admit_pilot(
    state: web::Data<State>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    admit(Endpoint::Pilot, &state, &request, &body)
}

async fn admit_mixer(
    state: web::Data<State>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    admit(Endpoint::Mixer, &state, &request, &body)
}

fn admit(endpoint: Endpoint, state: &State, request: &HttpRequest, body: &[u8]) -> HttpResponse {
    let json = mesh::webhook::is_json(
        request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    if !json {
        return HttpResponse::UnsupportedMediaType()
            .body("Content-Type: expected application/json (an AdmissionReview)\n");
    }
    let served = state.snapshots.borrow().clone();
    match webhook::review(endpoint, &served, &state.metrics, body) {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(malformed) => {
            tracing::warn!("malformed AdmissionReview: {malformed}");
            HttpResponse::BadRequest().body(format!("{malformed}\n"))
        }
    }
}
