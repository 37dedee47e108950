//! The self-signed root (`--self-signed-ca`): made on first start, kept in
//! `istio-ca-secret`, and rolled before it expires through an overlapping
//! trust bundle, so no workload ever holds a certificate its peers cannot
//! verify (istio/istio#14516: a root that silently expired took mTLS down).
//!
//! The roll has two steps. Inside the grace period a next root is made and
//! added to the bundle while the current one keeps signing, so every
//! workload learns it first. Halfway through the grace period the next root
//! becomes the signer; the old one stays in the bundle until it expires.

use std::collections::BTreeMap;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::keys::{Algorithm, Key};
use super::{Ca, CaError, Root, material};

/// The Secret's keys: Istio's two, and Trireme's for the roll.
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
/// Every trusted root, the signer's first.
pub const BUNDLE: &str = "root-cert.pem";
pub const NEXT_CERT: &str = "next-ca-cert.pem";
pub const NEXT_KEY: &str = "next-ca-key.pem";

/// A new root key and its self-signed certificate, `O=<trust-domain>` as Istio's.
pub fn create(
    trust_domain: &str,
    ttl: Duration,
    algorithm: Algorithm,
) -> Result<(Key, String), CaError> {
    let key = Key::generate(algorithm, true)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + ttl;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&super::random_serial()));
    let cert = params
        .self_signed(&key.pair)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    Ok((key, cert.pem()))
}

/// What `istio-ca-secret` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub key: String,
    pub cert: String,
    /// The trust bundle; absent in a Secret Istio wrote (then: the cert).
    pub bundle: String,
    pub next: Option<(String, String)>,
}

impl Stored {
    pub fn new(key: &Key, cert: String) -> Stored {
        Stored {
            key: key.pem.clone(),
            bundle: cert.clone(),
            cert,
            next: None,
        }
    }

    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Stored, CaError> {
        let text = |k: &str| -> Result<Option<String>, CaError> {
            data.get(k)
                .map(|v| {
                    String::from_utf8(v.clone())
                        .map_err(|_| material(&format!("istio-ca-secret {k}"), "not UTF-8 PEM"))
                })
                .transpose()
        };
        let need =
            |k: &str| text(k)?.ok_or_else(|| material(&format!("istio-ca-secret {k}"), "missing"));
        let cert = need(CA_CERT)?;
        let next = match (text(NEXT_KEY)?, text(NEXT_CERT)?) {
            (Some(k), Some(c)) => Some((k, c)),
            _ => None,
        };
        Ok(Stored {
            key: need(CA_KEY)?,
            bundle: text(BUNDLE)?.unwrap_or_else(|| cert.clone()),
            cert,
            next,
        })
    }

    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut data = BTreeMap::from([
            (CA_CERT.to_string(), self.cert.clone().into_bytes()),
            (CA_KEY.to_string(), self.key.clone().into_bytes()),
            (BUNDLE.to_string(), self.bundle.clone().into_bytes()),
        ]);
        if let Some((key, cert)) = &self.next {
            data.insert(NEXT_KEY.to_string(), key.clone().into_bytes());
            data.insert(NEXT_CERT.to_string(), cert.clone().into_bytes());
        }
        data
    }

    pub fn ca(&self, trust_domain: &str) -> Result<Ca, CaError> {
        let key = Key::from_pem(&self.key)?;
        let roots = Root::parse_all("istio-ca-secret root-cert.pem", &self.bundle)?;
        Ca::new(trust_domain, key.pair, &self.cert, Vec::new(), roots)
    }
}

/// What the roll does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Keep,
    /// Make the next root and trust it.
    AddNext,
    /// Sign with the next root.
    Promote,
    /// Forget roots that have expired.
    DropExpired,
}

/// `grace_percent` of the signer's lifetime before its expiry starts the roll.
pub fn plan(stored: &Stored, now: OffsetDateTime, grace_percent: u32) -> Result<Step, CaError> {
    let signer = Root::parse_all("istio-ca-secret ca-cert.pem", &stored.cert)?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(signer.der.as_ref())
        .map_err(|e| material("istio-ca-secret ca-cert.pem", e))?;
    let not_before = cert.validity().not_before.to_datetime();
    let lifetime = signer.not_after - not_before;
    let remaining = signer.not_after - now;
    let grace = lifetime * (grace_percent as f64 / 100.0);
    if stored.next.is_some() && remaining < grace / 2 {
        return Ok(Step::Promote);
    }
    if stored.next.is_none() && remaining < grace {
        return Ok(Step::AddNext);
    }
    let roots = Root::parse_all("istio-ca-secret root-cert.pem", &stored.bundle)?;
    if roots.iter().any(|r| r.not_after <= now) {
        return Ok(Step::DropExpired);
    }
    Ok(Step::Keep)
}

/// Takes `step`, making a root of `ttl` if it needs one.
pub fn apply(
    stored: &Stored,
    step: Step,
    trust_domain: &str,
    ttl: Duration,
    algorithm: Algorithm,
    now: OffsetDateTime,
) -> Result<Stored, CaError> {
    let mut next = stored.clone();
    match step {
        Step::Keep => {}
        Step::AddNext => {
            let (key, cert) = create(trust_domain, ttl, algorithm)?;
            next.bundle = format!("{}{}", stored.bundle, cert);
            next.next = Some((key.pem, cert));
        }
        Step::Promote => {
            let (key, cert) = stored
                .next
                .clone()
                .ok_or_else(|| material("istio-ca-secret", "no next root to promote"))?;
            let others: String = Root::parse_all("istio-ca-secret root-cert.pem", &stored.bundle)?
                .into_iter()
                .filter(|r| r.pem.trim() != cert.trim())
                .map(|r| r.pem)
                .collect();
            next.bundle = format!("{cert}{others}");
            next.key = key;
            next.cert = cert;
            next.next = None;
        }
        Step::DropExpired => {
            next.bundle = Root::parse_all("istio-ca-secret root-cert.pem", &stored.bundle)?
                .into_iter()
                .filter(|r| r.not_after > now)
                .map(|r| r.pem)
                .collect();
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_rolls_through_an_overlapping_bundle() {
        let ttl = Duration::from_secs(1000);
        let (key, cert) = create("cluster.local", ttl, Algorithm::Ecdsa).unwrap();
        let first = Stored::new(&key, cert.clone());
        let start = OffsetDateTime::now_utc();
        let at = |secs: i64| start + time::Duration::seconds(secs);
        assert_eq!(plan(&first, at(0), 20).unwrap(), Step::Keep);
        assert_eq!(plan(&first, at(850), 20).unwrap(), Step::AddNext);

        // The next root outlives the simulated clock below.
        let long = Duration::from_secs(10_000);
        let overlap = apply(
            &first,
            Step::AddNext,
            "cluster.local",
            long,
            Algorithm::Ecdsa,
            at(850),
        )
        .unwrap();
        assert_eq!(overlap.cert, cert, "the old root keeps signing");
        let ca = overlap.ca("cluster.local").unwrap();
        assert_eq!(ca.roots().len(), 2, "both roots trusted");
        assert_eq!(plan(&overlap, at(850), 20).unwrap(), Step::Keep);
        assert_eq!(plan(&overlap, at(950), 20).unwrap(), Step::Promote);

        let promoted = apply(
            &overlap,
            Step::Promote,
            "cluster.local",
            ttl,
            Algorithm::Ecdsa,
            at(950),
        )
        .unwrap();
        assert_ne!(promoted.cert, cert);
        let ca = promoted.ca("cluster.local").unwrap();
        assert_eq!(ca.roots().len(), 2);
        assert_eq!(ca.roots()[0].pem, promoted.cert, "the signer's root first");
        assert_eq!(ca.roots()[1].pem, cert, "the old root still trusted");

        // Stored and read back, as across a restart.
        let read = Stored::from_data(&promoted.to_data()).unwrap();
        assert_eq!(read, promoted);

        assert_eq!(plan(&promoted, at(1001), 20).unwrap(), Step::DropExpired);
        let dropped = apply(
            &promoted,
            Step::DropExpired,
            "cluster.local",
            ttl,
            Algorithm::Ecdsa,
            at(1001),
        )
        .unwrap();
        assert_eq!(dropped.ca("cluster.local").unwrap().roots().len(), 1);
    }

    #[test]
    fn an_istio_secret_without_a_bundle_trusts_its_cert() {
        let (key, cert) =
            create("cluster.local", Duration::from_secs(60), Algorithm::Ecdsa).unwrap();
        let data = BTreeMap::from([
            (CA_CERT.to_string(), cert.clone().into_bytes()),
            (CA_KEY.to_string(), key.pem.clone().into_bytes()),
        ]);
        let stored = Stored::from_data(&data).unwrap();
        assert_eq!(stored.bundle, cert);
        let e = Stored::from_data(&BTreeMap::new()).unwrap_err();
        assert_eq!(e.to_string(), "istio-ca-secret ca-cert.pem: missing");
    }
}
