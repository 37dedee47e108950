//! Local mode's stand-in for the Kubernetes API server's token issuer: a
//! signing key, the JWKS Citadel trusts (`--token-jwks`), and a token per
//! pod, shaped as a projected service-account token.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::PublicKeyData;
use rsa::traits::PublicKeyParts;
use serde_json::json;

use crate::authority::keys::{self, Key};

pub struct Issuer {
    key: Key,
    kid: String,
    algorithm: Algorithm,
}

/// One token's claims.
#[derive(Debug, Clone)]
pub struct Mint {
    pub namespace: String,
    pub service_account: String,
    /// None: a legacy Secret-based token (no `aud`).
    pub audience: Option<String>,
    pub issuer: String,
    /// None: no `exp`.
    pub ttl: Option<Duration>,
}

impl Issuer {
    /// ES256 by default; RS256 with `rsa`.
    pub fn generate(rsa: bool) -> Result<Issuer, keys::KeyError> {
        let algorithm = if rsa {
            keys::Algorithm::Rsa
        } else {
            keys::Algorithm::Ecdsa
        };
        Issuer::from_key(Key::generate(algorithm, true)?)
    }

    pub fn from_key(key: Key) -> Result<Issuer, keys::KeyError> {
        let algorithm = if key.pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            Algorithm::ES256
        } else if key.pair.is_compatible(&rcgen::PKCS_RSA_SHA256) {
            Algorithm::RS256
        } else {
            return Err(keys::KeyError::Parse(
                "an issuer key is ECDSA P-256 or RSA".into(),
            ));
        };
        // A stable kid: the key's own fingerprint.
        let digest = fingerprint(&key.pair.subject_public_key_info());
        let kid = URL_SAFE_NO_PAD.encode(&digest[..16]);
        Ok(Issuer {
            key,
            kid,
            algorithm,
        })
    }

    pub fn load(path: &Path) -> Result<Issuer, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = Key::from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Issuer::from_key(key).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn key_pem(&self) -> String {
        self.key.pair.serialize_pem()
    }

    /// The document an API server serves at `/openid/v1/jwks`.
    pub fn jwks(&self) -> String {
        let jwk = match self.algorithm {
            Algorithm::ES256 => {
                // The uncompressed point: 0x04, x, y.
                let point = self.key.pair.public_key_raw();
                json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])})
            }
            _ => {
                use rsa::pkcs8::DecodePublicKey;
                let public = rsa::RsaPublicKey::from_public_key_der(
                    &self.key.pair.subject_public_key_info(),
                )
                .expect("an RSA key pair's own public key");
                json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                    "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                    "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be())})
            }
        };
        json!({ "keys": [jwk] }).to_string()
    }

    pub fn mint(&self, m: &Mint) -> Result<String, String> {
        self.mint_at(m, 0)
    }

    /// A token issued `shift` seconds from now (negative: in the past).
    pub fn mint_at(&self, m: &Mint, shift: i64) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64
            + shift;
        let mut claims = json!({
            "iss": m.issuer,
            "sub": format!("system:serviceaccount:{}:{}", m.namespace, m.service_account),
            "iat": now,
            "nbf": now,
            "kubernetes.io": {"namespace": m.namespace, "serviceaccount": {"name": m.service_account}},
        });
        if let Some(aud) = &m.audience {
            claims["aud"] = json!([aud]);
        }
        if let Some(ttl) = m.ttl {
            claims["exp"] = json!(now + ttl.as_secs() as i64);
        }
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        let der = self.key.pair.serialize_der();
        let key = match self.algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_der(&der),
            _ => EncodingKey::from_rsa_der(&pkcs1_of(&der)?),
        };
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
    }
}

/// jsonwebtoken signs RSA with a PKCS#1 key.
fn pkcs1_of(pkcs8: &[u8]) -> Result<Vec<u8>, String> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).map_err(|e| e.to_string())?;
    Ok(key
        .to_pkcs1_der()
        .map_err(|e| e.to_string())?
        .as_bytes()
        .to_vec())
}

fn fingerprint(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// `citadel token …`: what local tooling (the test harness, `make demo`)
/// runs instead of a Kubernetes API server.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make the issuer's key (kept if it exists) and write its JWKS.
    Issuer {
        #[arg(long)]
        key: std::path::PathBuf,
        #[arg(long)]
        jwks: std::path::PathBuf,
        /// RS256 instead of ES256.
        #[arg(long)]
        rsa: bool,
    },
    /// Print a projected service-account token.
    Mint {
        #[arg(long)]
        key: std::path::PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long = "service-account")]
        service_account: String,
        /// Empty: a legacy token, with neither `aud` nor `exp`.
        #[arg(long, default_value = "istio-ca")]
        audience: String,
        #[arg(long, default_value = "kubernetes/local")]
        issuer: String,
        #[arg(long, default_value = "24h", value_parser = api::duration::parse)]
        ttl: Duration,
    },
}

impl Command {
    pub fn run(self) -> Result<(), String> {
        match self {
            Command::Issuer { key, jwks, rsa } => {
                let issuer = if key.exists() {
                    Issuer::load(&key)?
                } else {
                    let issuer = Issuer::generate(rsa).map_err(|e| e.to_string())?;
                    crate::secrets::dir::write_private(&key, issuer.key_pem().as_bytes())
                        .map_err(|e| format!("{}: {e}", key.display()))?;
                    issuer
                };
                std::fs::write(&jwks, issuer.jwks()).map_err(|e| format!("{}: {e}", jwks.display()))
            }
            Command::Mint {
                key,
                namespace,
                service_account,
                audience,
                issuer,
                ttl,
            } => {
                let legacy = audience.is_empty();
                let token = Issuer::load(&key)?.mint(&Mint {
                    namespace,
                    service_account,
                    audience: (!legacy).then_some(audience),
                    issuer,
                    ttl: (!legacy).then_some(ttl),
                })?;
                println!("{token}");
                Ok(())
            }
        }
    }
}
