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

/// A Citadel `istio.<sa>` Secret as mounted: `cert-chain.pem`, `key.pem`,
/// `root-cert.pem` in one directory (`/etc/certs` in Istio 1.x).
#[derive(Debug, Clone)]
pub struct MountedCerts {
    pub dir: PathBuf,
}

impl MountedCerts {
    fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        let path = self.dir.join(name);
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A server config for gRPC (h2) that presents the mounted certificate
    /// and requires a client certificate from the mounted roots.
    pub fn mutual_server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&self.read("cert-chain.pem")?)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("cert-chain.pem: {e}"))?;
        if chain.is_empty() {
            return Err("cert-chain.pem: no certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(&self.read("key.pem")?)
            .map_err(|e| format!("key.pem: {e}"))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.read("root-cert.pem")?) {
            let cert = cert.map_err(|e| format!("root-cert.pem: {e}"))?;
            roots.add(cert).map_err(|e| format!("root-cert.pem: {e}"))?;
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| format!("root-cert.pem: {e}"))?;
        let mut config = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Loads the certificates, then reloads them whenever the directory
    /// changes (Citadel re-issues them well before they expire), until
    /// `shutdown`. Files that do not load keep the previous config in force.
    pub fn watch(
        self,
        shutdown: CancellationToken,
    ) -> Result<watch::Receiver<Arc<ServerConfig>>, String> {
        let (tx, rx) = watch::channel(self.mutual_server_config()?);
        tokio::spawn(async move {
            let reload = || async {
                match self.mutual_server_config() {
                    Ok(config) => {
                        tx.send_replace(config);
                        tracing::debug!(dir = %self.dir.display(), "certificates loaded");
                    }
                    Err(e) => {
                        tracing::error!(dir = %self.dir.display(), "certificates not reloaded, the previous ones stay: {e}")
                    }
                }
            };
            if let Err(e) = crate::dir::on_changes(&self.dir, shutdown, reload).await {
                tracing::error!(dir = %self.dir.display(), "cannot watch the certificates: {e}");
            }
        });
        Ok(rx)
    }
}
