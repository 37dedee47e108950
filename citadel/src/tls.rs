//! TLS on the CSR port: Citadel's own serving certificate, signed by the
//! CA it serves and replaced when the CA changes or the certificate ages;
//! and client certificates, never required, checked against the current
//! trust bundle so a workload may renew with the certificate it holds.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::SanType;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use tokio_util::sync::CancellationToken;

use crate::authority::keys::Algorithm;
use crate::authority::{Authority, Ca, CaError, uri_san};

/// What the serving certificate says.
#[derive(Debug, Clone)]
pub struct ServingNames {
    /// `--grpc-host-identities`.
    pub dns: Vec<String>,
    /// The address bound, so local clients may dial it by IP.
    pub ip: Option<IpAddr>,
    pub ttl: Duration,
}

/// Citadel's own certificate and the client check, both swapped in place.
pub struct Credentials {
    serving: RwLock<Arc<CertifiedKey>>,
    clients: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials")
    }
}

fn serving_cert(ca: &Ca, names: &ServingNames) -> Result<CertifiedKey, CaError> {
    let key = crate::authority::keys::Key::generate(Algorithm::Ecdsa, true)?;
    let mut sans = vec![uri_san(&format!(
        "spiffe://{}/ns/istio-system/sa/istio-citadel-service-account",
        ca.trust_domain
    ))?];
    for name in &names.dns {
        sans.push(SanType::DnsName(name.clone().try_into().map_err(|_| {
            CaError::Sign(format!("{name:?} is not a DNS name"))
        })?));
    }
    if let Some(ip) = names.ip.filter(|ip| !ip.is_unspecified()) {
        sans.push(SanType::IpAddress(ip));
    }
    let issued = ca.sign(&key.pair, false, sans, names.ttl)?;
    let chain: Vec<CertificateDer<'static>> = issued.chain[..issued.chain.len() - 1]
        .iter()
        .filter_map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()).ok())
        .collect();
    let private = PrivateKeyDer::try_from(key.pair.serialize_der())
        .map_err(|e| CaError::Sign(e.to_string()))?;
    let signer = any_supported_type(&private).map_err(|e| CaError::Sign(e.to_string()))?;
    Ok(CertifiedKey::new(chain, signer))
}

fn client_verifier(ca: &Ca) -> Result<Arc<dyn ClientCertVerifier>, CaError> {
    let mut roots = RootCertStore::empty();
    for root in ca.roots() {
        roots
            .add(root.der.clone())
            .map_err(|e| CaError::Sign(format!("a root the TLS stack refuses: {e}")))?;
    }
    WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| CaError::Sign(e.to_string()))
}

impl Credentials {
    pub fn new(ca: &Ca, names: &ServingNames) -> Result<Arc<Credentials>, CaError> {
        Ok(Arc::new(Credentials {
            serving: RwLock::new(Arc::new(serving_cert(ca, names)?)),
            clients: RwLock::new(client_verifier(ca)?),
        }))
    }

    fn refresh(&self, ca: &Ca, names: &ServingNames) -> Result<(), CaError> {
        let serving = serving_cert(ca, names)?;
        let clients = client_verifier(ca)?;
        *self.serving.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(serving);
        *self.clients.write().unwrap_or_else(|p| p.into_inner()) = clients;
        Ok(())
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn server_config(self: &Arc<Credentials>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder()
            .with_client_cert_verifier(Arc::new(Clients(self.clone())))
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// Re-issues the serving certificate when the CA changes and at half its
    /// life, until `shutdown`.
    pub async fn keep_fresh(
        self: Arc<Credentials>,
        authority: Authority,
        names: ServingNames,
        shutdown: CancellationToken,
    ) {
        let mut changes = authority.subscribe();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(names.ttl / 2) => {}
            }
            match self.refresh(&authority.current(), &names) {
                Ok(()) => tracing::info!("serving certificate re-issued"),
                Err(e) => tracing::error!("cannot re-issue the serving certificate: {e}"),
            }
        }
    }
}

impl ResolvesServerCert for Credentials {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.serving
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// The client check in force at handshake time.
#[derive(Debug)]
struct Clients(Arc<Credentials>);

impl ClientCertVerifier for Clients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; the bundle may change under a borrowed slice.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.verifier().supported_verify_schemes()
    }
}
