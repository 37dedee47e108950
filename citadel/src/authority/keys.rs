//! Private keys: generated for the root and for the Secrets Citadel writes,
//! and read from a plugged-in CA's files in whichever PEM form they come.

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

/// The kind of key Citadel makes (`--key-algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    /// RSA 2048, as Istio 1.x.
    Rsa,
    /// ECDSA on P-256: far cheaper to make and to sign with.
    Ecdsa,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a key: {0}")]
    Generate(String),
    #[error("not a private key this CA can sign with (PKCS#8, PKCS#1 RSA or SEC1 P-256 PEM): {0}")]
    Parse(String),
}

/// A key ready to sign with, and its PEM as written to a Secret's `key.pem`.
pub struct Key {
    pub pair: KeyPair,
    pub pem: String,
}

impl Key {
    /// `pkcs8` writes RSA keys as PKCS#8 rather than Istio's default PKCS#1
    /// (`--pkcs8-keys`); ECDSA keys are always PKCS#8.
    pub fn generate(algorithm: Algorithm, pkcs8: bool) -> Result<Key, KeyError> {
        match algorithm {
            Algorithm::Ecdsa => {
                let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                let pem = pair.serialize_pem();
                Ok(Key { pair, pem })
            }
            Algorithm::Rsa => {
                let mut rng = rand::thread_rng();
                let key = rsa::RsaPrivateKey::new(&mut rng, 2048)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                let der = key
                    .to_pkcs8_der()
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                let pair = KeyPair::try_from(der.as_bytes())
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                let pem = if pkcs8 {
                    pair.serialize_pem()
                } else {
                    key.to_pkcs1_pem(LineEnding::LF)
                        .map_err(|e| KeyError::Generate(e.to_string()))?
                        .to_string()
                };
                Ok(Key { pair, pem })
            }
        }
    }

    /// Reads `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` PEM.
    pub fn from_pem(pem: &str) -> Result<Key, KeyError> {
        let pkcs8 = if pem.contains("BEGIN RSA PRIVATE KEY") {
            rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|e| KeyError::Parse(e.to_string()))?
                .to_pkcs8_der()
                .map_err(|e| KeyError::Parse(e.to_string()))?
                .as_bytes()
                .to_vec()
        } else if pem.contains("BEGIN EC PRIVATE KEY") {
            p256::SecretKey::from_sec1_pem(pem)
                .map_err(|e| KeyError::Parse(format!("SEC1 (only P-256 is read): {e}")))?
                .to_pkcs8_der()
                .map_err(|e| KeyError::Parse(e.to_string()))?
                .as_bytes()
                .to_vec()
        } else {
            return KeyPair::from_pem(pem)
                .map(|pair| Key {
                    pair,
                    pem: pem.to_string(),
                })
                .map_err(|e| KeyError::Parse(e.to_string()));
        };
        let pair =
            KeyPair::try_from(pkcs8.as_slice()).map_err(|e| KeyError::Parse(e.to_string()))?;
        Ok(Key {
            pair,
            pem: pem.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_read_back_in_every_form() {
        let ec = Key::generate(Algorithm::Ecdsa, false).unwrap();
        assert!(ec.pem.contains("BEGIN PRIVATE KEY"));
        Key::from_pem(&ec.pem).unwrap();
        let rsa = Key::generate(Algorithm::Rsa, false).unwrap();
        assert!(rsa.pem.contains("BEGIN RSA PRIVATE KEY"), "Istio's PKCS#1");
        assert!(rsa.pair.is_compatible(&rcgen::PKCS_RSA_SHA256));
        Key::from_pem(&rsa.pem).unwrap();
        let sec1 = p256::SecretKey::random(&mut rand::thread_rng())
            .to_sec1_pem(LineEnding::LF)
            .unwrap();
        Key::from_pem(&sec1).unwrap();
    }

    #[test]
    fn garbage_is_named_as_such() {
        let e =
            Key::from_pem("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
                .err()
                .unwrap();
        assert!(e.to_string().contains("not a private key"), "{e}");
    }
}
