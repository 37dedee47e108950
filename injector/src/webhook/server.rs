//! `sidecar-injector`: the webhook on HTTPS (actix-web over rustls), the
//! monitoring port, the health file Kubernetes probes, and reloads of the
//! certificate and the config when their files change.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context;
use axum::http::StatusCode;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Sources};
use crate::metrics::Metrics;
use mesh::webhook::{CertFiles, Reloading, keep_certificate, parent, touch_health_file};

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The webhook's HTTPS port.
    #[arg(long, default_value_t = 443)]
    pub port: u16,
    /// The address the webhook and monitoring ports are bound to.
    #[arg(long, default_value = "0.0.0.0")]
    pub address: IpAddr,
    #[arg(long = "monitoringPort", default_value_t = 15014)]
    pub monitoring_port: u16,
    #[arg(
        long = "tlsCertFile",
        default_value = "/etc/istio/certs/cert-chain.pem"
    )]
    pub tls_cert_file: PathBuf,
    #[arg(long = "tlsKeyFile", default_value = "/etc/istio/certs/key.pem")]
    pub tls_key_file: PathBuf,
    /// The CA that signed the serving certificate: the `caBundle` the
    /// MutatingWebhookConfiguration must carry. A warning is logged when it
    /// cannot be read once the certificate has loaded.
    #[arg(long = "caCertFile", default_value = "/etc/istio/certs/root-cert.pem")]
    pub ca_cert_file: PathBuf,
    /// Injection policy and template; built in (Istio 1.4's) when not given.
    #[arg(long = "injectConfig")]
    pub inject_config: Option<PathBuf>,
    /// The mesh config; Istio's defaults when not given.
    #[arg(long = "meshConfig")]
    pub mesh_config: Option<PathBuf>,
    /// Helm values the template reads, over the built-in ones.
    #[arg(long = "valuesFile")]
    pub values_file: Option<PathBuf>,
    /// Touched every `--healthCheckInterval` while the process runs;
    /// `sidecar-injector probe` checks it (liveness).
    #[arg(long = "healthCheckFile")]
    pub health_check_file: Option<PathBuf>,
    #[arg(long = "healthCheckInterval", default_value = "2s", value_parser = api::duration::parse)]
    pub health_check_interval: Duration,
    /// HTTP workers for the webhook; 0 is one per core.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
}

impl ServerArgs {
    pub fn sources(&self) -> Sources {
        Sources {
            inject_config: self.inject_config.clone(),
            mesh_config: self.mesh_config.clone(),
            values: self.values_file.clone(),
        }
    }
}

/// Said once, not at every certificate reload.
static CA_WARNING: std::sync::Once = std::sync::Once::new();

struct State {
    config: RwLock<Arc<Config>>,
    metrics: Metrics,
}

pub async fn run(
    args: ServerArgs,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    mesh::tls::install_crypto_provider();
    let metrics = Metrics::new();
    let state = web::Data::new(State {
        config: RwLock::new(Arc::new(config)),
        metrics: metrics.clone(),
    });
    let certs = Arc::new(Reloading::default());

    let monitoring = mesh::server::bind(
        &format!("{}:{}", args.address, args.monitoring_port),
        "monitoringPort",
    )
    .await?;
    let ready_certs = certs.clone();
    let router = mesh::server::monitoring_router(metrics.registry.clone(), crate::INFO).route(
        "/ready",
        axum::routing::get(move || {
            let ready = ready_certs.loaded();
            async move {
                if ready {
                    (StatusCode::OK, "ready\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no serving certificate yet\n",
                    )
                }
            }
        }),
    );
    let monitoring_task = tokio::spawn(mesh::server::serve_http(
        monitoring,
        router,
        shutdown.clone(),
    ));

    let files = CertFiles {
        cert: args.tls_cert_file.clone(),
        key: args.tls_key_file.clone(),
    };
    let loaded_metrics = metrics.clone();
    let ca = args.ca_cert_file.clone();
    tokio::spawn(keep_certificate(
        files,
        certs.clone(),
        move || {
            loaded_metrics.certificate_loaded.set(1);
            if let Err(e) = std::fs::read(&ca) {
                CA_WARNING.call_once(|| tracing::warn!(ca = %ca.display(), "--caCertFile cannot be read ({e}); the webhook configuration's caBundle must be set another way"));
            }
        },
        shutdown.clone(),
    ));
    if let Some(file) = args.health_check_file.clone() {
        tokio::spawn(touch_health_file(
            file,
            args.health_check_interval,
            shutdown.clone(),
        ));
    }
    // One watch per directory: Istio mounts config and values side by side.
    let mut dirs: Vec<PathBuf> = [&args.inject_config, &args.mesh_config, &args.values_file]
        .into_iter()
        .flatten()
        .map(|p| parent(p))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        tokio::spawn(reload_config(
            dir,
            args.sources(),
            state.clone(),
            shutdown.clone(),
        ));
    }

    let tls = certs.server_config();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(8 << 20))
            .route("/inject", web::post().to(inject))
            .route("/inject/", web::post().to(inject))
    })
    .disable_signals()
    // An answer written in pieces must not wait on the API server's delayed ACK.
    .tcp_nodelay(true)
    .shutdown_timeout(5);
    if args.workers > 0 {
        server = server.workers(args.workers);
    }
    let server = server
        .bind_rustls_0_23((args.address, args.port), tls)
        .with_context(|| format!("cannot listen on {}:{} (--port)", args.address, args.port))?
        .run();
    tracing::info!(address = %args.address, port = args.port, monitoring = args.monitoring_port, "webhook listening on /inject");
    let handle = server.handle();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        stopper.cancelled().await;
        tracing::info!("stopping the webhook; requests in flight finish");
        handle.stop(true).await;
    });
    server.await.context("webhook server")?;
    shutdown.cancel();
    let _ = monitoring_task.await;
    Ok(())
}

async fn inject(state: web::Data<State>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
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
    let config = state
        .config
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match super::review(&config, &state.metrics, &body) {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(malformed) => {
            tracing::warn!("malformed AdmissionReview: {malformed}");
            HttpResponse::BadRequest().body(format!("{malformed}\n"))
        }
    }
}

async fn reload_config(
    dir: PathBuf,
    sources: Sources,
    state: web::Data<State>,
    shutdown: CancellationToken,
) {
    let reload = || async {
        match Config::load(&sources) {
            Ok(config) => {
                let mut current = state.config.write().unwrap_or_else(|p| p.into_inner());
                if current.version != config.version {
                    tracing::info!(version = %config.version, "injection config reloaded");
                    *current = Arc::new(config);
                }
            }
            Err(e) => {
                state.metrics.config_reload_errors.inc();
                tracing::error!("injection config not reloaded, the previous one stays: {e}");
            }
        }
    };
    if let Err(e) = mesh::dir::on_changes(&dir, shutdown, reload).await {
        tracing::error!(dir = %dir.display(), "cannot watch the injection config: {e}");
    }
}
