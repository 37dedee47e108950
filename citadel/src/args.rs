//! `citadel`'s flags, as Istio's `istio_ca` named them, and their checks:
//! everything is validated before a port is bound.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::authority::keys::Algorithm;
use crate::authority::plugged::Files;
use crate::identity::Identity;

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
