//! Reading a workload's certificate signing request: its signature checked,
//! its key strong enough, its requested names collected for the caller's
//! identity to be compared against. Nothing else in it is trusted: the
//! certificate's extensions are Citadel's choice, not the requester's.

use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, PublicKeyData};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// Why a CSR cannot be signed; each becomes `INVALID_ARGUMENT`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CsrError {
    #[error("csr: not a PEM CERTIFICATE REQUEST")]
    Pem,
    #[error("csr: not a PKCS#10 request: {0}")]
    Der(String),
    #[error("csr: the signature does not match its public key")]
    Signature,
    #[error("csr: weak key: {0}")]
    WeakKey(String),
    #[error("csr: unsupported key: {0}")]
    UnsupportedKey(String),
}

/// A requested name, as the CSR spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    Uri(String),
    Dns(String),
    Other(String),
}

/// A CSR that may be signed.
#[derive(Debug)]
pub struct Request {
    pub key: RequestKey,
    pub sans: Vec<San>,
}

/// The requester's public key, as the issued certificate carries it.
#[derive(Debug)]
pub struct RequestKey {
    raw: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
    pub rsa: bool,
}

impl PublicKeyData for RequestKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

pub fn parse(pem: &str) -> Result<Request, CsrError> {
    let der =
        CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|_| CsrError::Pem)?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| CsrError::Der(e.to_string()))?;
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let (algorithm, rsa) = match spki.parsed() {
        Ok(PublicKey::RSA(key)) => {
            let bits = key.key_size();
            if bits < 2048 {
                return Err(CsrError::WeakKey(format!(
                    "RSA {bits} bits (at least 2048)"
                )));
            }
            (&PKCS_RSA_SHA256, true)
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => (&PKCS_ECDSA_P256_SHA256, false),
                OID_P384 => (&PKCS_ECDSA_P384_SHA384, false),
                other => {
                    return Err(CsrError::UnsupportedKey(format!(
                        "EC curve {other} (P-256 or P-384)"
                    )));
                }
            }
        }
        Ok(_) => {
            return Err(CsrError::UnsupportedKey(format!(
                "algorithm {} (RSA or ECDSA)",
                spki.algorithm.algorithm.to_id_string()
            )));
        }
        Err(e) => return Err(CsrError::Der(format!("public key: {e}"))),
    };
    // After the key checks: ring refuses to verify with weak keys at all.
    csr.verify_signature().map_err(|_| CsrError::Signature)?;
    let mut sans = Vec::new();
    for extension in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(names) = extension {
            for name in &names.general_names {
                sans.push(match name {
                    GeneralName::URI(u) => San::Uri(u.to_string()),
                    GeneralName::DNSName(d) => San::Dns(d.to_string()),
                    other => San::Other(other.to_string()),
                });
            }
        }
    }
    Ok(Request {
        key: RequestKey {
            raw: spki.subject_public_key.data.to_vec(),
            algorithm,
            rsa,
        },
        sans,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

    /// A CSR for `sans`, signed with `key`, as a workload's agent sends it.
    pub fn csr(key: &KeyPair, sans: &[&str]) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans
            .iter()
            .map(|s| SanType::URI(s.to_string().try_into().unwrap()))
            .collect();
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_good_request_gives_its_key_and_names() {
        let key = KeyPair::generate().unwrap();
        let r = parse(&csr(&key, &["spiffe://cluster.local/ns/default/sa/a"])).unwrap();
        assert_eq!(
            r.sans,
            [San::Uri("spiffe://cluster.local/ns/default/sa/a".into())]
        );
        assert!(!r.key.rsa);
        assert_eq!(r.key.der_bytes(), key.public_key_raw());
    }

    #[test]
    fn garbage_a_forged_signature_and_weak_keys_are_refused() {
        assert_eq!(parse("hello").unwrap_err(), CsrError::Pem);
        let junk = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        assert!(matches!(parse(junk), Err(CsrError::Der(_))));

        // One letter changed in the requested name breaks the signature.
        let key = KeyPair::generate().unwrap();
        let pem = csr(&key, &["spiffe://cluster.local/ns/default/sa/a"]);
        let mut der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let at = der.windows(4).position(|w| w == b"sa/a").unwrap() + 3;
        der[at] = b'b';
        let forged = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert_eq!(parse(&forged).unwrap_err(), CsrError::Signature);

        // Made with `openssl req -newkey rsa:1024`: ring will not make one.
        let e = parse(include_str!("testdata/rsa1024.csr")).unwrap_err();
        assert!(e.to_string().contains("RSA 1024 bits"), "{e}");
    }
}
