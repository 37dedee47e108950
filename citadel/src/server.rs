//! `citadel`: wiring and lifecycle; the flags are in [`crate::args`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::ca::istio_certificate_service_server::IstioCertificateServiceServer;
use axum::routing::get;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use crate::args::{ServerArgs, Validated, validate};
use crate::authority::{Authority, Lifetimes};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::root::RootKeeper;
use crate::secrets::controller::{Controller, Settings};
use crate::secrets::dir::DirStore;
use crate::secrets::{Accounts, SecretStore};
use crate::serve::{Authenticate, CertificateService};
use crate::tls::{Credentials, ServingNames};
use crate::token::{Expect, Verifier};

pub const INFO: mesh::version::Info =
    mesh::version::Info::new("citadel", env!("CARGO_PKG_VERSION"));

pub async fn run(
    args: ServerArgs,
    valid: Validated,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    mesh::tls::install_crypto_provider();
    let grpc_listener = mesh::server::bind(&valid.grpc.to_string(), "grpc-port").await?;
    let monitoring_listener =
        mesh::server::bind(&valid.monitoring.to_string(), "monitoring-port").await?;
    tracing::info!(grpc = %valid.grpc, monitoring = %valid.monitoring, trust_domain = %valid.trust_domain, "listening");

    let registry = mesh::metrics::Metrics::default();
    let metrics = Metrics::new(&registry);
    let (ready_tx, ready) = watch::channel(false);
    let router = mesh::server::monitoring_router(registry, INFO).route(
        "/ready",
        get(move || {
            let ready = *ready.borrow();
            async move {
                if ready {
                    (axum::http::StatusCode::OK, "ready")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }
        }),
    );
    let monitoring = tokio::spawn(mesh::server::serve_http(
        monitoring_listener,
        router,
        shutdown.clone(),
    ));

    let (store, kube_client): (Arc<dyn SecretStore>, Option<kube::Client>) = match &args.secrets_dir
    {
        Some(dir) => (Arc::new(DirStore::new(dir.clone())), None),
        None => {
            let client = kube::Client::try_default()
                .await
                .context("no --secrets-dir, and no Kubernetes API to keep Secrets in")?;
            (
                Arc::new(crate::secrets::kube::KubeStore::new(client.clone())),
                Some(client),
            )
        }
    };

    let (ledger, ledger_writer) = Ledger::open(&args.ledger_url, metrics.clone())
        .await
        .with_context(|| format!("--ledger-url {}", args.ledger_url))?;
    tracing::info!(url = %args.ledger_url, "ledger open");

    let mut tasks = tokio::task::JoinSet::new();
    let authority = match &valid.plugged {
        Some(files) => {
            let ca = files.load(&valid.trust_domain).context("plugged-in CA")?;
            tracing::info!(signing_cert = %files.signing_cert.display(), roots = ca.roots().len(), "plugged-in CA loaded");
            let authority = Authority::new(ca);
            tasks.spawn(crate::root::watch_plugged(
                files.clone(),
                valid.trust_domain.clone(),
                authority.clone(),
                shutdown.clone(),
            ));
            authority
        }
        None => {
            let keeper = RootKeeper {
                store: store.clone(),
                namespace: args.storage_namespace.clone(),
                trust_domain: valid.trust_domain.clone(),
                ttl: args.self_signed_ca_cert_ttl,
                grace_percent: args.self_signed_root_cert_grace_period_percentile,
                algorithm: args.key_algorithm,
            };
            let authority = keeper.start().await.context("self-signed root")?;
            tasks.spawn(keeper.run(
                authority.clone(),
                args.self_signed_root_cert_check_interval,
                shutdown.clone(),
            ));
            authority
        }
    };
    let gauge = metrics.root_expiry.clone();
    let mut root_changes = authority.subscribe();
    gauge.set(authority.current().signer_not_after().unix_timestamp());
    tasks.spawn({
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = root_changes.changed() => if r.is_err() { return },
                }
                let ca = root_changes.borrow_and_update().clone();
                gauge.set(ca.signer_not_after().unix_timestamp());
            }
        }
    });
    tasks.spawn(crate::root::warn_before_expiry(
        authority.clone(),
        shutdown.clone(),
    ));

    let (accounts_tx, accounts_rx) = watch::channel(Arc::new(Accounts::default()));
    match (&args.config_dir, &kube_client) {
        (Some(dir), _) => {
            let dir = dir.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) =
                    crate::secrets::dir::watch_accounts(dir.clone(), accounts_tx, shutdown).await
                {
                    tracing::error!(dir = %dir.display(), "cannot watch --configDir: {e}");
                }
            });
        }
        (None, Some(client)) => {
            let client = client.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) =
                    crate::secrets::kube::watch_accounts(client, accounts_tx, shutdown).await
                {
                    tracing::error!("ServiceAccount watch ended: {e:#}");
                }
            });
        }
        (None, None) => unreachable!("validated: --configDir comes with --secrets-dir"),
    }
    let controller = Controller {
        store: store.clone(),
        authority: authority.clone(),
        settings: Settings {
            storage_namespace: args.storage_namespace.clone(),
            enabled_by_default: args.enable_namespaces_by_default,
            ttl: args.workload_cert_ttl,
            grace_ratio: args.workload_cert_grace_period_ratio,
            min_grace: args.workload_cert_min_grace_period,
            algorithm: args.key_algorithm,
            pkcs8: args.pkcs8_keys,
            dns_names: valid.dns_names.clone(),
            check_interval: Duration::from_secs(60),
        },
        metrics: metrics.clone(),
        ledger: ledger.clone(),
    };
    tasks.spawn(controller.run(accounts_rx, shutdown.clone()));

    let tokens: Arc<dyn Authenticate> = match (&args.token_jwks, &kube_client) {
        (Some(path), _) => Arc::new(
            Verifier::from_jwks_file(
                path,
                Expect {
                    audience: args.token_audience.clone(),
                    issuer: args.token_issuer.clone(),
                },
            )
            .map_err(anyhow::Error::msg)
            .context("--token-jwks")?,
        ),
        (None, Some(client)) => Arc::new(crate::token::review::TokenReviewer::new(
            client.clone(),
            args.token_audience.clone(),
        )),
        (None, None) => {
            anyhow::bail!("--token-jwks is needed when there is no Kubernetes API to review tokens")
        }
    };
    let names = ServingNames {
        dns: args
            .grpc_host_identities
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        ip: Some(args.bind_address),
        ttl: args.workload_cert_ttl,
    };
    let credentials =
        Credentials::new(&authority.current(), &names).context("serving certificate")?;
    tasks.spawn(
        credentials
            .clone()
            .keep_fresh(authority.clone(), names, shutdown.clone()),
    );
    let service = CertificateService {
        authority: authority.clone(),
        tokens,
        lifetimes: Arc::new(Lifetimes {
            default_ttl: args.workload_cert_ttl,
            max_ttl: args.max_workload_cert_ttl,
        }),
        metrics: metrics.clone(),
        ledger: ledger.clone(),
    };
    drop(ledger);
    let _ = ready_tx.send(true);
    tracing::info!("serving istio.v1.auth.IstioCertificateService over TLS");
    tonic::transport::Server::builder()
        .add_service(IstioCertificateServiceServer::new(service))
        .serve_with_incoming_shutdown(
            mesh::tls::incoming(
                grpc_listener,
                tokio::sync::watch::channel(credentials.server_config()).1,
                shutdown.clone(),
            ),
            shutdown.clone().cancelled_owned(),
        )
        .await
        .context("gRPC server")?;
    tracing::info!("gRPC server stopped; draining");
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    // The last Ledger went with the tasks: the writer finishes its queue.
    let _ = tokio::time::timeout(Duration::from_secs(10), ledger_writer).await;
    let _ = monitoring.await;
    Ok(())
}
