//! `citadel`: Istio's `istio_ca` flags, wiring and lifecycle.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::ca::istio_certificate_service_server::IstioCertificateServiceServer;
use axum::routing::get;
use clap::Args;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::authority::keys::Algorithm;
use crate::authority::plugged::Files;
use crate::authority::{Authority, Lifetimes};
use crate::identity::Identity;
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

fn duration(text: &str) -> Result<Duration, String> {
    api::duration::parse(text)
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Make and keep a self-signed root (in istio-ca-secret) instead of
    /// reading a plugged-in CA.
    #[arg(long = "self-signed-ca")]
    pub self_signed_ca: bool,
    /// The self-signed root's lifetime.
    #[arg(long, env = "CITADEL_SELF_SIGNED_CA_CERT_TTL", default_value = "87600h", value_parser = duration, hide = true)]
    pub self_signed_ca_cert_ttl: Duration,
    /// How often the self-signed root is checked for its roll.
    #[arg(long, env = "CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL", default_value = "1h", value_parser = duration, hide = true)]
    pub self_signed_root_cert_check_interval: Duration,
    /// The share of the root's lifetime before expiry at which its roll starts.
    #[arg(long, env = "CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=90), hide = true)]
    pub self_signed_root_cert_grace_period_percentile: u32,
    /// Manage namespaces without ca.istio.io labels.
    #[arg(long, env = "CITADEL_ENABLE_NAMESPACES_BY_DEFAULT", default_value_t = true, action = clap::ArgAction::Set, hide = true)]
    pub enable_namespaces_by_default: bool,

    /// A plugged-in CA's signing certificate.
    #[arg(long = "signing-cert", default_value = "/etc/cacerts/ca-cert.pem")]
    pub signing_cert: PathBuf,
    #[arg(long = "signing-key", default_value = "/etc/cacerts/ca-key.pem")]
    pub signing_key: PathBuf,
    #[arg(long = "root-cert", default_value = "/etc/cacerts/root-cert.pem")]
    pub root_cert: PathBuf,
    /// Certificates between the signing certificate and the root (optional).
    #[arg(long = "cert-chain", default_value = "/etc/cacerts/cert-chain.pem")]
    pub cert_chain: PathBuf,

    /// The SPIFFE trust domain (cluster.local when empty).
    #[arg(long = "trust-domain", default_value = "")]
    pub trust_domain: String,
    #[arg(long = "workload-cert-ttl", default_value = "2160h", value_parser = duration)]
    pub workload_cert_ttl: Duration,
    #[arg(long = "max-workload-cert-ttl", default_value = "2160h", value_parser = duration)]
    pub max_workload_cert_ttl: Duration,
    /// Re-issue a Secret's certificate once this share of its life is left.
    #[arg(long = "workload-cert-grace-period-ratio", default_value_t = 0.5)]
    pub workload_cert_grace_period_ratio: f64,
    #[arg(long = "workload-cert-min-grace-period", default_value = "10m", value_parser = duration)]
    pub workload_cert_min_grace_period: Duration,
    /// Keys Citadel makes: RSA 2048 as Istio, or ECDSA P-256.
    #[arg(long = "key-algorithm", value_enum, default_value = "rsa")]
    pub key_algorithm: Algorithm,
    /// Write RSA keys as PKCS#8 instead of PKCS#1.
    #[arg(long = "pkcs8-keys")]
    pub pkcs8_keys: bool,

    #[arg(long = "grpc-port", default_value_t = 8060)]
    pub grpc_port: u16,
    /// The serving certificate's DNS names, comma-separated.
    #[arg(
        long = "grpc-host-identities",
        alias = "grpc-hostname",
        default_value = "istio-ca,istio-citadel"
    )]
    pub grpc_host_identities: String,
    #[arg(long = "monitoring-port", default_value_t = 15014)]
    pub monitoring_port: u16,
    /// Bind every port on this address only (local mode: the pod's IP).
    #[arg(long = "bind-address", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Where istio-ca-secret lives, and the Citadel ca.istio.io/env names.
    #[arg(long = "citadel-storage-namespace", default_value = "istio-system")]
    pub storage_namespace: String,

    /// Read ServiceAccounts and Namespaces from this File-registry directory
    /// instead of the Kubernetes API.
    #[arg(long = "configDir")]
    pub config_dir: Option<PathBuf>,
    /// Keep Secrets as directories under here instead of in Kubernetes.
    #[arg(long = "secrets-dir")]
    pub secrets_dir: Option<PathBuf>,
    /// The token issuer's public keys (a JWKS document, as served at
    /// /openid/v1/jwks). Without it, tokens are checked with TokenReview.
    #[arg(long = "token-jwks")]
    pub token_jwks: Option<PathBuf>,
    /// The audience tokens must carry; empty accepts legacy tokens.
    #[arg(long = "token-audience", default_value = "istio-ca")]
    pub token_audience: String,
    #[arg(long = "token-issuer")]
    pub token_issuer: Option<String>,
    /// Where every issued certificate is recorded: sqlite:PATH or postgres://.
    #[arg(long = "ledger-url", default_value = "sqlite://citadel-ledger.db")]
    pub ledger_url: String,
    /// Give the injector's and Galley's ServiceAccounts their Services' DNS names.
    #[arg(long = "append-dns-names", default_value_t = true, action = clap::ArgAction::Set)]
    pub append_dns_names: bool,
    /// More DNS names: `<sa>.<ns>:<name>[,...]`.
    #[arg(long = "custom-dns-names", default_value = "")]
    pub custom_dns_names: String,
}

/// What `validate` learnt, so `run` cannot disagree with it.
pub struct Validated {
    pub trust_domain: String,
    pub grpc: SocketAddr,
    pub monitoring: SocketAddr,
    pub dns_names: BTreeMap<Identity, Vec<String>>,
    pub plugged: Option<Files>,
}

pub fn validate(args: &ServerArgs) -> anyhow::Result<Validated> {
    let trust_domain = if args.trust_domain.is_empty() {
        "cluster.local".to_string()
    } else {
        args.trust_domain.clone()
    };
    anyhow::ensure!(
        !trust_domain.contains('/') && !trust_domain.contains(':'),
        "--trust-domain {trust_domain:?}: a domain name, not a URI"
    );
    anyhow::ensure!(
        (0.2..=0.8).contains(&args.workload_cert_grace_period_ratio),
        "--workload-cert-grace-period-ratio {}: must be within 0.2..0.8",
        args.workload_cert_grace_period_ratio
    );
    anyhow::ensure!(
        args.workload_cert_ttl <= args.max_workload_cert_ttl,
        "--workload-cert-ttl is above --max-workload-cert-ttl"
    );
    anyhow::ensure!(
        args.config_dir.is_some() == args.secrets_dir.is_some(),
        "--configDir and --secrets-dir go together (local mode), or neither (Kubernetes)"
    );
    let mut dns_names: BTreeMap<Identity, Vec<String>> = BTreeMap::new();
    let ns = &args.storage_namespace;
    if args.append_dns_names {
        for (sa, service) in [
            (
                "istio-sidecar-injector-service-account",
                "istio-sidecar-injector",
            ),
            ("istio-galley-service-account", "istio-galley"),
        ] {
            dns_names.insert(
                Identity::new(ns.clone(), sa),
                vec![format!("{service}.{ns}.svc"), format!("{service}.{ns}")],
            );
        }
    }
    for entry in args
        .custom_dns_names
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (account, name) = entry
            .split_once(':')
            .with_context(|| format!("--custom-dns-names {entry:?}: expected <sa>.<ns>:<name>"))?;
        let (sa, namespace) = account
            .rsplit_once('.')
            .with_context(|| format!("--custom-dns-names {entry:?}: expected <sa>.<ns>:<name>"))?;
        dns_names
            .entry(Identity::new(namespace, sa))
            .or_default()
            .push(name.to_string());
    }
    let plugged = (!args.self_signed_ca).then(|| Files {
        signing_cert: args.signing_cert.clone(),
        signing_key: args.signing_key.clone(),
        root_cert: args.root_cert.clone(),
        cert_chain: Some(args.cert_chain.clone()).filter(|p| p.exists()),
    });
    Ok(Validated {
        trust_domain,
        grpc: SocketAddr::new(args.bind_address, args.grpc_port),
        monitoring: SocketAddr::new(args.bind_address, args.monitoring_port),
        dns_names,
        plugged,
    })
}

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
            crate::tls::incoming(grpc_listener, credentials.server_config(), shutdown.clone()),
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
