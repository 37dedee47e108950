//! Who is asking for a certificate: a Kubernetes service-account token
//! (`authorization: Bearer <JWT>`), verified offline against the API
//! server's published keys (a JWKS document, `--token-jwks`).
//!
//! Local mode has no API server, so [`issuer`] plays its part: it makes the
//! key, publishes the JWKS and mints each pod's token.

pub mod issuer;
pub mod review;

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::identity::Identity;

/// Why a token does not identify anyone; each becomes `UNAUTHENTICATED`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("token signed with {0:?}; only RS256 and ES256 are accepted")]
    Algorithm(Algorithm),
    #[error("no key of the issuer verifies the token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token subject {0:?} is not system:serviceaccount:<namespace>:<name>")]
    Subject(String),
    /// The token could not be checked at all (the API server is away): the
    /// caller should try again, not give up on its token.
    #[error("cannot review the token now: {0}")]
    Unavailable(String),
}

/// What the verifier checks besides the signature.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Must be among the token's `aud`; empty accepts legacy tokens that
    /// carry neither `aud` nor `exp`.
    pub audience: String,
    /// `iss`, when set.
    pub issuer: Option<String>,
}

pub struct Verifier {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    expect: Expect,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Verifier {
    pub fn from_jwks_file(path: &Path, expect: Expect) -> Result<Verifier, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Verifier::from_jwks(&text, expect).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_jwks(text: &str, expect: Expect) -> Result<Verifier, String> {
        let set: JwkSet =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => return Err(format!("keys[{i}]: only RSA and EC keys are read")),
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))?;
            keys.push((jwk.common.key_id.clone(), algorithm, key));
        }
        if keys.is_empty() {
            return Err("keys: empty".into());
        }
        Ok(Verifier { keys, expect })
    }

    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(TokenError::Algorithm(header.alg));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = 60;
        if self.expect.audience.is_empty() {
            validation.validate_aud = false;
            validation.set_required_spec_claims::<&str>(&["sub"]);
        } else {
            validation.set_audience(&[&self.expect.audience]);
            validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        }
        if let Some(issuer) = &self.expect.issuer {
            validation.set_issuer(&[issuer]);
        }
        let candidates = self.keys.iter().filter(|(kid, alg, _)| {
            *alg == header.alg && (header.kid.is_none() || kid.is_none() || *kid == header.kid)
        });
        let mut last = None;
        for (_, _, key) in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    return Identity::from_token_subject(&data.claims.sub)
                        .ok_or(TokenError::Subject(data.claims.sub));
                }
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                }
                Err(e) => last = Some(TokenError::Invalid(e.to_string())),
            }
        }
        Err(last.unwrap_or(TokenError::UnknownKey(header.kid)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::issuer::{Issuer, Mint};
    use super::*;

    fn expect() -> Expect {
        Expect {
            audience: "istio-ca".into(),
            issuer: Some("kubernetes/local".into()),
        }
    }

    fn mint(sa: &str) -> Mint {
        Mint {
            namespace: "default".into(),
            service_account: sa.into(),
            audience: Some("istio-ca".into()),
            issuer: "kubernetes/local".into(),
            ttl: Some(Duration::from_secs(600)),
        }
    }

    #[test]
    fn tokens_of_both_key_kinds_name_their_service_account() {
        for rsa in [false, true] {
            let issuer = Issuer::generate(rsa).unwrap();
            let v = Verifier::from_jwks(&issuer.jwks(), expect()).unwrap();
            let token = issuer.mint(&mint("reviews")).unwrap();
            assert_eq!(
                v.verify(&token).unwrap(),
                Identity::new("default", "reviews")
            );
        }
    }

    #[test]
    fn wrong_audience_issuer_key_or_expiry_is_refused() {
        let issuer = Issuer::generate(false).unwrap();
        let v = Verifier::from_jwks(&issuer.jwks(), expect()).unwrap();
        let other = Issuer::generate(false).unwrap();
        assert!(matches!(
            v.verify(&other.mint(&mint("a")).unwrap()),
            Err(TokenError::UnknownKey(_))
        ));
        let mut m = mint("a");
        m.audience = Some("kube-apiserver".into());
        let e = v.verify(&issuer.mint(&m).unwrap()).unwrap_err();
        assert!(e.to_string().contains("InvalidAudience"), "{e}");
        let mut m = mint("a");
        m.issuer = "someone-else".into();
        assert!(v.verify(&issuer.mint(&m).unwrap()).is_err());
        let mut m = mint("a");
        m.ttl = None;
        let e = v.verify(&issuer.mint(&m).unwrap()).unwrap_err();
        assert!(e.to_string().contains("exp"), "a token without exp: {e}");
        // Minted 600 s tokens 720 s and 630 s ago: past the 60 s leeway, and within it.
        let expired = issuer.mint_at(&mint("a"), -720).unwrap();
        let e = v.verify(&expired).unwrap_err();
        assert!(e.to_string().contains("ExpiredSignature"), "{e}");
        let within_leeway = issuer.mint_at(&mint("a"), -630).unwrap();
        v.verify(&within_leeway).unwrap();
        assert!(matches!(v.verify("a.b.c"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn legacy_tokens_need_an_empty_audience() {
        let issuer = Issuer::generate(false).unwrap();
        let mut legacy = mint("a");
        legacy.audience = None;
        legacy.ttl = None;
        let token = issuer.mint(&legacy).unwrap();
        let strict = Verifier::from_jwks(&issuer.jwks(), expect()).unwrap();
        assert!(strict.verify(&token).is_err());
        let lax = Verifier::from_jwks(
            &issuer.jwks(),
            Expect {
                audience: String::new(),
                issuer: None,
            },
        )
        .unwrap();
        assert_eq!(lax.verify(&token).unwrap(), Identity::new("default", "a"));
    }
}
