//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: a workload
//! proves who it is (a service-account token, or a certificate this CA
//! issued) and gets its CSR signed, for that identity only. Istio 1.4
//! signed whatever SAN the caller asked for; this service does not.

use std::sync::Arc;
use std::time::Duration;

use api::ca::istio_certificate_service_server::IstioCertificateService;
use api::ca::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Request, Response, Status};

use crate::authority::csr::{self, San};
use crate::authority::{Authority, Lifetimes, uri_san};
use crate::identity::Identity;
use crate::ledger::{Entry, Ledger};
use crate::metrics::Metrics;
use crate::token::TokenError;

/// Turns a bearer token into an identity: offline against a JWKS, or by
/// asking the API server (TokenReview).
#[async_trait::async_trait]
pub trait Authenticate: Send + Sync {
    async fn authenticate(&self, token: &str) -> Result<Identity, TokenError>;
}

#[async_trait::async_trait]
impl Authenticate for crate::token::Verifier {
    async fn authenticate(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify(token)
    }
}

#[async_trait::async_trait]
impl Authenticate for crate::token::review::TokenReviewer {
    async fn authenticate(&self, token: &str) -> Result<Identity, TokenError> {
        self.review(token).await
    }
}

#[derive(Clone)]
pub struct CertificateService {
    pub authority: Authority,
    pub tokens: Arc<dyn Authenticate>,
    pub lifetimes: Arc<Lifetimes>,
    pub metrics: Metrics,
    pub ledger: Ledger,
}

impl CertificateService {
    async fn caller<T>(&self, request: &Request<T>) -> Result<(Identity, &'static str), Status> {
        if let Some(value) = request.metadata().get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    Status::unauthenticated("authorization: expected \"Bearer <token>\"")
                })?;
            let identity = self
                .tokens
                .authenticate(token.trim())
                .await
                .map_err(|e| match e {
                    TokenError::Unavailable(_) => Status::unavailable(e.to_string()),
                    e => Status::unauthenticated(format!("service-account token: {e}")),
                })?;
            return Ok((identity, "token"));
        }
        // Verified against the trust bundle during the handshake.
        let trust_domain = self.authority.current().trust_domain.clone();
        if let Some(identity) = request
            .peer_certs()
            .and_then(|certs| certs.first().cloned())
            .and_then(|leaf| identity_of(leaf.as_ref(), &trust_domain))
        {
            return Ok((identity, "certificate"));
        }
        Err(Status::unauthenticated(
            "no credentials: send a service-account token as \"authorization: Bearer <token>\" or a certificate this CA issued",
        ))
    }
}

fn identity_of(der: &[u8], trust_domain: &str) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Identity::from_spiffe(u, trust_domain),
        _ => None,
    })
}

#[tonic::async_trait]
impl IstioCertificateService for CertificateService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.csr_count.inc();
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (caller, how) = self.caller(&request).await.inspect_err(|e| {
            self.metrics.authentication_failures.inc();
            tracing::debug!(%peer, "CSR refused: {}", e.message());
        })?;
        let body = request.into_inner();
        let parsed = csr::parse(&body.csr).map_err(|e| {
            self.metrics.csr_parsing_errors.inc();
            Status::invalid_argument(e.to_string())
        })?;
        let ca = self.authority.current();
        let own = caller.spiffe(&ca.trust_domain);
        if parsed.sans != [San::Uri(own.clone())] {
            self.metrics.authorization_failures.inc();
            let asked: Vec<String> = parsed
                .sans
                .iter()
                .map(|s| match s {
                    San::Uri(u) => u.clone(),
                    San::Dns(d) => format!("DNS:{d}"),
                    San::Other(o) => o.clone(),
                })
                .collect();
            tracing::warn!(%peer, caller = %caller, ?asked, "CSR for another identity refused");
            return Err(Status::permission_denied(format!(
                "csr: the only SAN allowed is {own} (the caller's identity); the CSR asks for {asked:?}"
            )));
        }
        let ttl = match body.validity_duration {
            d if d < 0 => {
                return Err(Status::invalid_argument(format!(
                    "validity_duration: {d} s is negative"
                )));
            }
            0 => self.lifetimes.default_ttl,
            d => Duration::from_secs(d as u64),
        };
        if ttl > self.lifetimes.max_ttl {
            return Err(Status::invalid_argument(format!(
                "validity_duration: {} s is above the maximum of {} s (--max-workload-cert-ttl)",
                ttl.as_secs(),
                self.lifetimes.max_ttl.as_secs()
            )));
        }
        let san = uri_san(&own).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let issued = ca
            .sign(&parsed.key, parsed.key.rsa, vec![san], ttl)
            .map_err(|e| {
                self.metrics.csr_sign_errors.inc();
                tracing::error!("signing failed: {e}");
                Status::internal(e.to_string())
            })?;
        self.metrics.issued.inc();
        self.ledger.record(Entry {
            serial: issued.serial.clone(),
            identity: own,
            not_before: issued.not_before,
            not_after: issued.not_after,
            requester: format!("csr {peer} ({how})"),
        });
        tracing::debug!(%peer, caller = %caller, serial = %issued.serial, "certificate issued");
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: issued.chain,
        }))
    }
}
