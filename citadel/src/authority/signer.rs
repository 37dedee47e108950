//! The CA's own key as rcgen signs with it. ring signs ECDSA well, but RSA
//! at well under half of OpenSSL's rate on CPUs with AVX-512; AWS-LC carries
//! OpenSSL's fast RSA code, so an RSA CA key signs through it. The public
//! half and everything else stay with ring's key pair.

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};

pub struct CaKey {
    pair: KeyPair,
    rsa: Option<aws_lc_rs::rsa::KeyPair>,
}

impl CaKey {
    pub fn new(pair: KeyPair) -> Result<CaKey, String> {
        let rsa = if pair.is_compatible(&rcgen::PKCS_RSA_SHA256) {
            Some(
                aws_lc_rs::rsa::KeyPair::from_pkcs8(pair.serialized_der())
                    .map_err(|e| format!("the RSA key: {e}"))?,
            )
        } else {
            None
        };
        Ok(CaKey { pair, rsa })
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        self.pair.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.pair.algorithm()
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let Some(rsa) = &self.rsa else {
            return self.pair.sign(msg);
        };
        let mut signature = vec![0; rsa.public_modulus_len()];
        rsa.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            msg,
            &mut signature,
        )
        .map_err(|_| rcgen::Error::RingUnspecified)?;
        Ok(signature)
    }
}
