//! The certificate authority: one signing certificate and key, the chain
//! above it, and the trust bundle every workload is given. A [`Ca`] never
//! changes; a rotated root or a replaced `cacerts` is a new one, published
//! through [`Authority`].

pub mod csr;
pub mod keys;
pub mod plugged;
pub mod selfsigned;
pub mod signer;

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::identity::Identity;
use keys::{Algorithm, Key};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{what}: {message}")]
    Material { what: String, message: String },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
}

fn material(what: &str, message: impl ToString) -> CaError {
    CaError::Material {
        what: what.to_string(),
        message: message.to_string(),
    }
}

/// A root of the trust bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct Root {
    pub pem: String,
    pub der: CertificateDer<'static>,
    pub serial: String,
    pub not_after: OffsetDateTime,
}

impl Root {
    pub fn parse_all(what: &str, pem: &str) -> Result<Vec<Root>, CaError> {
        let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| material(what, format!("not PEM certificates: {e}")))?;
        if ders.is_empty() {
            return Err(material(what, "no certificate in it"));
        }
        ders.into_iter()
            .map(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
                    .map_err(|e| material(what, format!("not an X.509 certificate: {e}")))?;
                let not_after = cert.validity().not_after.to_datetime();
                let serial = cert.raw_serial_as_string();
                Ok(Root {
                    pem: pem_of(&der),
                    der,
                    serial,
                    not_after,
                })
            })
            .collect()
    }
}

/// PEM text of one DER certificate.
pub fn pem_of(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A certificate Citadel signed.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Hex, as `openssl x509 -serial` prints it (colon-separated pairs).
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The leaf, any intermediates, then the root: one PEM each.
    pub chain: Vec<String>,
}

/// What a workload certificate may ask for.
pub struct Lifetimes {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

pub struct Ca {
    pub trust_domain: String,
    issuer: Issuer<'static, signer::CaKey>,
    signer_not_after: OffsetDateTime,
    /// Between the leaf and the root.
    intermediates: Vec<String>,
    chain_root: String,
    roots: Vec<Root>,
    bundle: String,
}

impl Ca {
    /// `roots` is the whole trust bundle; the first root is the one the
    /// signer chains to (for a self-signed CA, the signer itself).
    pub fn new(
        trust_domain: &str,
        signer_key: KeyPair,
        signer_cert_pem: &str,
        intermediates: Vec<String>,
        roots: Vec<Root>,
    ) -> Result<Ca, CaError> {
        let signer = Root::parse_all("the signing certificate", signer_cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| material("the signing certificate", "empty"))?;
        let key = signer::CaKey::new(signer_key).map_err(|e| material("the signing key", e))?;
        let issuer = Issuer::from_ca_cert_der(&signer.der, key)
            .map_err(|e| material("the signing certificate", e))?;
        let chain_root = roots
            .first()
            .ok_or_else(|| material("the root certificate", "no root"))?
            .pem
            .clone();
        let bundle = roots.iter().map(|r| r.pem.as_str()).collect();
        Ok(Ca {
            trust_domain: trust_domain.to_string(),
            issuer,
            signer_not_after: signer.not_after,
            intermediates,
            chain_root,
            roots,
            bundle,
        })
    }

    /// Every trusted root, PEM concatenated: a Secret's `root-cert.pem`.
    pub fn bundle(&self) -> &str {
        &self.bundle
    }

    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    pub fn signer_not_after(&self) -> OffsetDateTime {
        self.signer_not_after
    }

    /// Signs a leaf for `key` naming only `sans`, valid for `ttl` from now
    /// but never past the signer's own expiry.
    pub fn sign(
        &self,
        key: &impl PublicKeyData,
        rsa: bool,
        sans: Vec<SanType>,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = if rsa {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now;
        params.not_after = (now + ttl).min(self.signer_not_after);
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut chain = Vec::with_capacity(2 + self.intermediates.len());
        chain.push(cert.pem());
        chain.extend(self.intermediates.iter().cloned());
        chain.push(self.chain_root.clone());
        Ok(Issued {
            serial: serial
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            not_before: params.not_before,
            not_after: params.not_after,
            chain,
        })
    }

    /// A new key and its certificate for `identity` (the Secrets the
    /// controller writes), with any extra DNS names.
    pub fn issue(
        &self,
        identity: &Identity,
        dns: &[String],
        ttl: Duration,
        algorithm: Algorithm,
        pkcs8: bool,
    ) -> Result<(Key, Issued), CaError> {
        let key = Key::generate(algorithm, pkcs8)?;
        let mut sans = vec![uri_san(&identity.spiffe(&self.trust_domain))?];
        for name in dns {
            sans.push(SanType::DnsName(name.clone().try_into().map_err(|_| {
                CaError::Sign(format!("{name:?} is not a DNS name"))
            })?));
        }
        let issued = self.sign(&key.pair, algorithm == Algorithm::Rsa, sans, ttl)?;
        Ok((key, issued))
    }
}

pub fn uri_san(uri: &str) -> Result<SanType, CaError> {
    Ok(SanType::URI(uri.to_string().try_into().map_err(|_| {
        CaError::Sign(format!("{uri:?} is not a URI SAN"))
    })?))
}

/// 128 random bits, positive as DER requires.
pub(crate) fn random_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    serial
}

/// The CA in force, replaced whole when the root rotates or the plugged-in
/// files change. Signing reads it without waiting on a writer for long.
#[derive(Clone)]
pub struct Authority(Arc<watch::Sender<Arc<Ca>>>);

impl Authority {
    pub fn new(ca: Ca) -> Authority {
        Authority(Arc::new(watch::Sender::new(Arc::new(ca))))
    }

    pub fn current(&self) -> Arc<Ca> {
        self.0.borrow().clone()
    }

    pub fn replace(&self, ca: Ca) {
        self.0.send_replace(Arc::new(ca));
    }

    /// Wakes on every replacement.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Ca>> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn test_ca(algorithm: Algorithm) -> Ca {
        let (key, pem) =
            selfsigned::create("cluster.local", Duration::from_secs(3600), algorithm).unwrap();
        let roots = Root::parse_all("root", &pem).unwrap();
        Ca::new("cluster.local", key.pair, &pem, Vec::new(), roots).unwrap()
    }

    #[test]
    fn a_workload_certificate_names_only_its_identity_and_chains_to_the_root() {
        let ca = test_ca(Algorithm::Ecdsa);
        let id = Identity::new("default", "reviews");
        let (_, issued) = ca
            .issue(&id, &[], Duration::from_secs(600), Algorithm::Ecdsa, false)
            .unwrap();
        assert_eq!(issued.chain.len(), 2);
        assert_eq!(issued.chain[1], ca.bundle());
        let leaf_der = CertificateDer::from_pem_slice(issued.chain[0].as_bytes()).unwrap();
        let (_, leaf) = parse_x509_certificate(leaf_der.as_ref()).unwrap();
        let root_der = &ca.roots()[0].der;
        let (_, root) = parse_x509_certificate(root_der.as_ref()).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        assert!(san.critical, "an empty subject makes the SAN critical");
        assert_eq!(
            san.value.general_names,
            [GeneralName::URI(
                "spiffe://cluster.local/ns/default/sa/reviews"
            )]
        );
        let usage = leaf.key_usage().unwrap().unwrap().value;
        assert!(usage.digital_signature() && !usage.key_encipherment());
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!leaf.is_ca());
        let lifetime =
            leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        assert_eq!(lifetime, 600);
        assert_eq!(leaf.raw_serial_as_string(), issued.serial);
    }

    #[test]
    fn rsa_leaves_may_encipher_keys_and_never_outlive_the_signer() {
        let ca = test_ca(Algorithm::Rsa);
        let id = Identity::new("default", "reviews");
        let (_, issued) = ca
            .issue(
                &id,
                &[],
                Duration::from_secs(86400 * 365),
                Algorithm::Ecdsa,
                false,
            )
            .unwrap();
        assert_eq!(issued.not_after, ca.signer_not_after());
        let (key, issued) = ca
            .issue(
                &id,
                &["istio-sidecar-injector.istio-system.svc".into()],
                Duration::from_secs(60),
                Algorithm::Rsa,
                true,
            )
            .unwrap();
        assert!(key.pem.contains("BEGIN PRIVATE KEY"));
        let der = CertificateDer::from_pem_slice(issued.chain[0].as_bytes()).unwrap();
        let (_, leaf) = parse_x509_certificate(der.as_ref()).unwrap();
        assert!(leaf.key_usage().unwrap().unwrap().value.key_encipherment());
        // Signed through AWS-LC, verified here through ring.
        let (_, root) = parse_x509_certificate(ca.roots()[0].der.as_ref()).unwrap();
        leaf.verify_signature(Some(root.public_key())).unwrap();
        let names = &leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(names.len(), 2);
    }
}
