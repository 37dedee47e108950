//! pilot-agent as node agent: it makes the workload's key, has Citadel sign
//! it with the pod's service-account token ([`workload`]), and serves the
//! result to Envoy over SDS on a Unix socket ([`server`]): `default` (the
//! certificate chain and key) and `ROOTCA` (the trust bundle). A new
//! certificate is pushed on the open streams before the old one expires, so
//! Envoy rotates with no restart (istio/istio#3155).

pub mod server;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// The resource names Envoy asks for, as Istio's agent named them.
pub const DEFAULT: &str = "default";
pub const ROOTCA: &str = "ROOTCA";
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyAlgorithm {
    /// RSA 2048, as Istio's agent.
    Rsa,
    Ecdsa,
}

#[derive(Debug, Clone, Args)]
pub struct SdsArgs {
    /// Serve SDS on this Unix socket (`unix:` prefix optional); off when empty.
    #[arg(long = "sdsUdsPath", env = "SDS_UDS_PATH", default_value = "")]
    pub sds_uds_path: String,
    /// Citadel's CSR service.
    #[arg(long = "caAddr", env = "CA_ADDR", default_value = "istio-citadel:8060")]
    pub ca_addr: String,
    /// The name Citadel's serving certificate must carry.
    #[arg(long = "caServerName", default_value = "istio-citadel")]
    pub ca_server_name: String,
    /// The trust bundle: Citadel's serving certificate is checked against it,
    /// and it is served as ROOTCA (re-read at every rotation).
    #[arg(
        long = "caRootCert",
        env = "CA_ROOT_CERT",
        default_value = "/etc/istio/citadel-ca-cert/root-cert.pem"
    )]
    pub ca_root_cert: PathBuf,
    /// The pod's service-account token (re-read for every CSR).
    #[arg(
        long = "tokenPath",
        env = "JWT_PATH",
        default_value = "/var/run/secrets/tokens/istio-token"
    )]
    pub token_path: PathBuf,
    #[arg(
        long = "serviceAccount",
        env = "SERVICE_ACCOUNT",
        default_value = "default"
    )]
    pub service_account: String,
    #[arg(
        long = "trustDomain",
        env = "TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    pub trust_domain: String,
    /// The lifetime asked for.
    #[arg(long = "secretTtl", env = "SECRET_TTL", default_value = "24h", value_parser = api::duration::parse)]
    pub secret_ttl: Duration,
    #[arg(long = "keyAlgorithm", value_enum, default_value = "rsa")]
    pub key_algorithm: KeyAlgorithm,
}

impl SdsArgs {
    pub fn socket(&self) -> Option<PathBuf> {
        let path = self
            .sds_uds_path
            .strip_prefix("unix:")
            .unwrap_or(&self.sds_uds_path);
        (!path.is_empty()).then(|| PathBuf::from(path))
    }
}
