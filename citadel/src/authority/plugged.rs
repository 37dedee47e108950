//! A plugged-in CA: the operator's signing certificate and key (Istio's
//! `cacerts` Secret mounted at `/etc/cacerts`), re-read whenever the files
//! change (istio/istio#11085: a replaced `cacerts` was never picked up).

use std::path::PathBuf;

use super::keys::Key;
use super::{Ca, CaError, Root, material};

/// `--signing-cert`, `--signing-key`, `--root-cert`, `--cert-chain`.
#[derive(Debug, Clone)]
pub struct Files {
    pub signing_cert: PathBuf,
    pub signing_key: PathBuf,
    pub root_cert: PathBuf,
    pub cert_chain: Option<PathBuf>,
}

impl Files {
    pub fn load(&self, trust_domain: &str) -> Result<Ca, CaError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| material(&path.display().to_string(), e))
        };
        let cert = read(&self.signing_cert)?;
        let key = Key::from_pem(&read(&self.signing_key)?)
            .map_err(|e| material(&self.signing_key.display().to_string(), e))?;
        let root_path = self.root_cert.display().to_string();
        let roots = Root::parse_all(&root_path, &read(&self.root_cert)?)?;
        // The chain from the signer up, without the roots: Istio's
        // cert-chain.pem usually holds ca-cert.pem first and may end in
        // the root, which the answer carries last anyway.
        let chain = match &self.cert_chain {
            Some(path) => Root::parse_all(&path.display().to_string(), &read(path)?)?,
            None => Root::parse_all(&self.signing_cert.display().to_string(), &cert)?,
        };
        let intermediates = chain
            .into_iter()
            .filter(|c| roots.iter().all(|r| r.der != c.der))
            .map(|c| c.pem)
            .collect();
        Ca::new(trust_domain, key.pair, &cert, intermediates, roots)
    }

    /// The directories to watch: each file's parent.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [
            Some(&self.signing_cert),
            Some(&self.signing_key),
            Some(&self.root_cert),
            self.cert_chain.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|p| {
            p.parent().map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d.to_path_buf()
                }
            })
        })
        .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    use super::*;
    use crate::authority::keys::Algorithm;
    use crate::authority::selfsigned;
    use crate::identity::Identity;

    #[test]
    fn an_intermediate_ca_signs_with_its_chain_and_the_root_last() {
        let dir = tempfile::tempdir().unwrap();
        let (root_key, root_pem) =
            selfsigned::create("cluster.local", Duration::from_secs(3600), Algorithm::Ecdsa)
                .unwrap();
        let root_issuer = Issuer::from_ca_cert_pem(&root_pem, root_key.pair).unwrap();
        let mid_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mid = params.signed_by(&mid_key, &root_issuer).unwrap();
        let path = |n: &str| dir.path().join(n);
        std::fs::write(path("ca-cert.pem"), mid.pem()).unwrap();
        std::fs::write(path("ca-key.pem"), mid_key.serialize_pem()).unwrap();
        std::fs::write(path("root-cert.pem"), &root_pem).unwrap();
        std::fs::write(path("cert-chain.pem"), format!("{}{}", mid.pem(), root_pem)).unwrap();
        let files = Files {
            signing_cert: path("ca-cert.pem"),
            signing_key: path("ca-key.pem"),
            root_cert: path("root-cert.pem"),
            cert_chain: Some(path("cert-chain.pem")),
        };
        let ca = files.load("cluster.local").unwrap();
        let (_, issued) = ca
            .issue(
                &Identity::new("default", "a"),
                &[],
                Duration::from_secs(60),
                Algorithm::Ecdsa,
                false,
            )
            .unwrap();
        assert_eq!(issued.chain.len(), 3);
        assert_eq!(issued.chain[1].trim(), mid.pem().trim());
        assert_eq!(issued.chain[2].trim(), root_pem.trim());
        assert_eq!(files.dirs(), [dir.path().to_path_buf()]);

        std::fs::write(path("ca-key.pem"), "not a key").unwrap();
        let e = files.load("cluster.local").err().unwrap().to_string();
        assert!(e.contains("ca-key.pem"), "{e}");
    }
}
