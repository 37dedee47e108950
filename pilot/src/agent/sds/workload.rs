//! The workload's certificate: a fresh key, a CSR for the pod's SPIFFE ID,
//! signed by Citadel with the pod's token; renewed at about half its life
//! (with jitter, so a fleet started together does not renew together), and
//! retried with backoff while Citadel is away — the current certificate is
//! served all along.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::ca::IstioCertificateRequest;
use api::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::{KeyAlgorithm, SdsArgs};

/// What SDS serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Leaf then intermediates, PEM.
    pub chain: String,
    pub key: String,
    /// Every trusted root, PEM.
    pub roots: String,
    pub serial: String,
    pub not_after: SystemTime,
}

fn key_pair(algorithm: KeyAlgorithm) -> anyhow::Result<rcgen::KeyPair> {
    Ok(match algorithm {
        KeyAlgorithm::Ecdsa => rcgen::KeyPair::generate()?,
        KeyAlgorithm::Rsa => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
            rcgen::KeyPair::try_from(key.to_pkcs8_der()?.as_bytes())?
        }
    })
}

pub struct Renewer {
    args: SdsArgs,
    spiffe: String,
}

impl Renewer {
    pub fn new(args: SdsArgs, namespace: &str) -> Renewer {
        let spiffe = format!(
            "spiffe://{}/ns/{namespace}/sa/{}",
            args.trust_domain, args.service_account
        );
        Renewer { args, spiffe }
    }

    pub fn spiffe(&self) -> &str {
        &self.spiffe
    }

    async fn client(&self, roots: &str) -> anyhow::Result<IstioCertificateServiceClient<Channel>> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(roots))
            .domain_name(self.args.ca_server_name.clone());
        let channel = Endpoint::from_shared(format!("https://{}", self.args.ca_addr))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        Ok(IstioCertificateServiceClient::new(channel))
    }

    /// One key, one CSR, one signature.
    pub async fn issue(&self) -> anyhow::Result<Issued> {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        };
        let bundle = read(&self.args.ca_root_cert)?;
        let token = read(&self.args.token_path)?;
        let key = key_pair(self.args.key_algorithm)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![rcgen::SanType::URI(self.spiffe.clone().try_into()?)];
        let csr = params.serialize_request(&key)?.pem()?;
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            subject_id: String::new(),
            validity_duration: self.args.secret_ttl.as_secs() as i64,
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {}", token.trim()).parse()?);
        let mut client = self.client(&bundle).await?;
        let chain = client
            .create_certificate(request)
            .await
            .map_err(|s| {
                anyhow::anyhow!("Citadel refused the CSR: {:?}: {}", s.code(), s.message())
            })?
            .into_inner()
            .cert_chain;
        anyhow::ensure!(
            chain.len() >= 2,
            "Citadel answered {} certificates; a chain ends in its root",
            chain.len()
        );
        let (leaf, rest) = chain.split_first().expect("checked");
        let (root, intermediates) = rest.split_last().expect("checked");
        let (serial, not_after) = leaf_facts(leaf)?;
        // The bundle may hold a root being rolled in or out; the chain's root
        // is trusted in any case.
        let mut roots = bundle.clone();
        if !roots.contains(root.trim()) {
            roots.push_str(root);
        }
        Ok(Issued {
            chain: std::iter::once(leaf)
                .chain(intermediates)
                .map(String::as_str)
                .collect(),
            key: key.serialize_pem(),
            roots,
            serial,
            not_after,
        })
    }

    /// Keeps `out` holding a valid certificate until `shutdown`.
    pub async fn run(self, out: watch::Sender<Option<Arc<Issued>>>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let wait = match self.issue().await {
                Ok(issued) => {
                    backoff = Duration::from_millis(500);
                    let left = issued
                        .not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    tracing::info!(identity = %self.spiffe, serial = %issued.serial, expires_in = ?left, "workload certificate issued");
                    out.send_replace(Some(Arc::new(issued)));
                    // About half the life, give or take a tenth.
                    let jitter = 0.4 + rand::random::<f64>() * 0.2;
                    left.mul_f64(jitter)
                }
                Err(e) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    tracing::warn!(identity = %self.spiffe, "cannot get a certificate, retrying in {wait:?}: {e:#}");
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

fn leaf_facts(pem: &str) -> anyhow::Result<(String, SystemTime)> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("Citadel's leaf is not PEM: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
        .map_err(|e| anyhow::anyhow!("Citadel's leaf is not a certificate: {e}"))?;
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(cert.validity().not_after.timestamp().max(0) as u64);
    Ok((cert.raw_serial_as_string(), not_after))
}
