//! Citadel started on its own "pod" address in local mode: its File-registry
//! directory of ServiceAccounts, its Secrets directory, a local token issuer
//! it trusts, and a TLS client for its CSR service.

use std::path::PathBuf;
use std::time::Duration;

use api::ca::IstioCertificateRequest;
use api::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use citadel::token::issuer::{Issuer, Mint};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::mesh::wait_ok;
use crate::process::Proc;
use crate::{bin, eventually};

pub struct Citadel {
    pub proc: Proc,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    pub ip: String,
    pub dir: tempfile::TempDir,
    pub issuer: Issuer,
    pub http: reqwest::Client,
}

/// A workload's key and the CSR for `sans`, as an agent makes them.
pub fn csr(sans: &[&str]) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = sans
        .iter()
        .map(|s| rcgen::SanType::URI(s.to_string().try_into().expect("uri")))
        .collect();
    let pem = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (key, pem)
}

impl Citadel {
    /// Starts `citadel` on `ip` with `accounts` (YAML) in its config
    /// directory, `args` and `env` added, and waits for `/ready`.
    pub async fn start(
        ip: &str,
        accounts: &str,
        args: &[&str],
        env: &[(&'static str, String)],
    ) -> Citadel {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = Issuer::generate(false).expect("issuer");
        std::fs::write(dir.path().join("jwks.json"), issuer.jwks()).expect("jwks");
        std::fs::create_dir(dir.path().join("config")).expect("config dir");
        std::fs::write(dir.path().join("config/accounts.yaml"), accounts).expect("accounts");
        let path = |p: &str| dir.path().join(p).display().to_string();
        let mut all: Vec<String> = vec![
            "--configDir".into(),
            path("config"),
            "--secrets-dir".into(),
            path("secrets"),
            "--token-jwks".into(),
            path("jwks.json"),
            "--token-issuer".into(),
            "kubernetes/local".into(),
            "--ledger-url".into(),
            format!("sqlite://{}", path("ledger.db")),
            "--bind-address".into(),
            ip.to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let proc = Proc::spawn(
            "citadel",
            &bin("citadel"),
            &all,
            env,
            &dir.path().join("citadel.log"),
        );
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let citadel = Citadel {
            proc,
            args: all,
            env: env.to_vec(),
            ip: ip.to_string(),
            dir,
            issuer,
            http,
        };
        citadel.wait_ready().await;
        citadel
    }

    async fn wait_ready(&self) {
        let url = format!("http://{}:15014/ready", self.ip);
        wait_ok(&self.http, &url, "citadel /ready", Duration::from_secs(30)).await;
    }

    /// Stops citadel (SIGTERM, waited for).
    pub fn stop(&mut self) {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(
            self.proc.wait_exit(Duration::from_secs(10)),
            "citadel stops on SIGTERM"
        );
    }

    /// Starts it again as before, with the same Secrets (so the same root).
    pub async fn start_again(&mut self) {
        let log = self.path("citadel-again.log");
        self.proc = Proc::spawn("citadel", &bin("citadel"), &self.args, &self.env, &log);
        self.wait_ready().await;
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("citadel.log")).unwrap_or_default()
    }

    /// A file of a Secret, when it exists.
    pub fn secret(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        std::fs::read_to_string(self.path("secrets").join(namespace).join(name).join(key)).ok()
    }

    /// The trust bundle workloads are given.
    pub fn roots(&self) -> String {
        self.secret("istio-system", "istio-ca-secret", "root-cert.pem")
            .expect("istio-ca-secret root-cert.pem")
    }

    pub fn token(&self, namespace: &str, sa: &str) -> String {
        self.issuer
            .mint(&Mint {
                namespace: namespace.into(),
                service_account: sa.into(),
                audience: Some("istio-ca".into()),
                issuer: "kubernetes/local".into(),
                ttl: Some(Duration::from_secs(600)),
            })
            .expect("token")
    }

    /// A client trusting the bundle, presenting `identity` (chain PEM, key
    /// PEM) when given, and checking the server is `istio-citadel`.
    pub async fn client(
        &self,
        identity: Option<(&str, &str)>,
    ) -> IstioCertificateServiceClient<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.roots()))
            .domain_name("istio-citadel");
        if let Some((chain, key)) = identity {
            tls = tls.identity(Identity::from_pem(chain, key));
        }
        let endpoint = Channel::from_shared(format!("https://{}:8060", self.ip))
            .expect("uri")
            .tls_config(tls)
            .expect("tls");
        let channel = eventually(
            "a TLS connection to citadel",
            Duration::from_secs(10),
            || {
                let endpoint = endpoint.clone();
                async move { endpoint.connect().await.ok() }
            },
        )
        .await;
        IstioCertificateServiceClient::new(channel)
    }

    /// CreateCertificate with `token` as the bearer, when given.
    pub async fn sign(
        &self,
        client: &mut IstioCertificateServiceClient<Channel>,
        token: Option<&str>,
        csr: &str,
        ttl_seconds: i64,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.to_string(),
            subject_id: String::new(),
            validity_duration: ttl_seconds,
        });
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("metadata"),
            );
        }
        client
            .create_certificate(request)
            .await
            .map(|r| r.into_inner().cert_chain)
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}:15014/metrics", self.ip);
        self.http
            .get(&url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }
}

/// Whether `leaf` (PEM) is signed by one of the certificates in `issuers` (PEM).
pub fn signed_by(leaf: &str, issuers: &str) -> bool {
    let der = |pem: &str| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = pem.as_bytes();
        while let Ok((r, p)) = x509_parser::pem::parse_x509_pem(rest) {
            out.push(p.contents);
            rest = r;
        }
        out
    };
    let leaves = der(leaf);
    let Some(leaf) = leaves.first() else {
        return false;
    };
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(leaf) else {
        return false;
    };
    der(issuers).iter().any(|i| {
        x509_parser::parse_x509_certificate(i)
            .map(|(_, issuer)| leaf.verify_signature(Some(issuer.public_key())).is_ok())
            .unwrap_or(false)
    })
}

/// The SPIFFE URI SANs of a PEM certificate.
pub fn uris(pem: &str) -> Vec<String> {
    let Ok((_, p)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return Vec::new();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&p.contents) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// How many certificates a PEM bundle holds.
pub fn count(pem: &str) -> usize {
    pem.matches("BEGIN CERTIFICATE").count()
}

/// A channel to an SDS server on a Unix socket, as Envoy dials it.
pub async fn unix_channel(path: &std::path::Path) -> Channel {
    let path = path.to_path_buf();
    eventually("the SDS socket", Duration::from_secs(20), || {
        let path = path.clone();
        async move {
            tonic::transport::Endpoint::from_static("http://sds")
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
                .ok()
        }
    })
    .await
}
