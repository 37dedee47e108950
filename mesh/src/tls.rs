//! TLS setup every service shares.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Chooses rustls's cryptography (ring) for the whole process. Clients built
/// later without a provider of their own (kube-rs's, say) would otherwise
/// panic on first use, as rustls cannot pick one when none is installed.
pub fn install_crypto_provider() {
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Accepted connections after their handshake with the config `config`
/// holds at that moment. Handshakes run on their own tasks, with a
/// deadline, so one slow client holds up no other.
pub fn incoming(
    listener: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config.borrow().clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A certificate chain, its key and the roots peers are checked against:
/// a Citadel `istio.<sa>` Secret as mounted (`cert-chain.pem`, `key.pem`,
/// `root-cert.pem` in `/etc/certs` in Istio 1.x), or files named by flags.
#[derive(Debug, Clone)]
pub struct MountedCerts {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl MountedCerts {
    /// The Secret's file names in `dir`.
    pub fn in_dir(dir: &std::path::Path) -> MountedCerts {
        MountedCerts {
            cert: dir.join("cert-chain.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("root-cert.pem"),
        }
    }

    fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A server config for gRPC (h2) that presents the mounted certificate
    /// and requires a client certificate from the mounted roots.
    pub fn mutual_server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let (cert, key, ca) = (&self.cert, &self.key, &self.ca);
        let named = |path: &PathBuf, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&Self::read(cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| named(cert, &e))?;
        if chain.is_empty() {
            return Err(named(cert, &"no certificate"));
        }
        let private =
            PrivateKeyDer::from_pem_slice(&Self::read(key)?).map_err(|e| named(key, &e))?;
        let mut roots = RootCertStore::empty();
        for root in CertificateDer::pem_slice_iter(&Self::read(ca)?) {
            let root = root.map_err(|e| named(ca, &e))?;
            roots.add(root).map_err(|e| named(ca, &e))?;
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| named(ca, &e))?;
        let mut config = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private)
            .map_err(|e| named(cert, &e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Loads the certificates, then reloads them whenever their directory
    /// changes (Citadel re-issues them well before they expire), until
    /// `shutdown`. Files that do not load keep the previous config in force.
    pub fn watch(
        self,
        shutdown: CancellationToken,
    ) -> Result<watch::Receiver<Arc<ServerConfig>>, String> {
        let (tx, rx) = watch::channel(self.mutual_server_config()?);
        let dir = crate::webhook::parent(&self.cert);
        tokio::spawn(async move {
            let reload = || async {
                match self.mutual_server_config() {
                    Ok(config) => {
                        tx.send_replace(config);
                        tracing::debug!(cert = %self.cert.display(), "certificates loaded");
                    }
                    Err(e) => {
                        tracing::error!("certificates not reloaded, the previous ones stay: {e}")
                    }
                }
            };
            if let Err(e) = crate::dir::on_changes(&dir, shutdown, reload).await {
                tracing::error!(dir = %dir.display(), "cannot watch the certificates: {e}");
            }
        });
        Ok(rx)
    }
}
