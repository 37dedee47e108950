//! What admission webhooks (the injector's, Galley's) share: a serving
//! certificate swapped in place when its files change (connections already
//! open keep theirs, new handshakes get the new one, the server never
//! restarts), and the health file Kubernetes probes with `<binary> probe`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn load(&self) -> Result<CertifiedKey, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(&self.cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        let certified = CertifiedKey::new(chain, signer);
        certified
            .keys_match()
            .map_err(|e| format!("{} and {}: {e}", self.cert.display(), self.key.display()))?;
        Ok(certified)
    }
}

/// Hands every handshake the certificate loaded last; none before the
/// first load, so handshakes fail until then (and readiness says so).
#[derive(Debug, Default)]
pub struct Reloading(RwLock<Option<Arc<CertifiedKey>>>);

impl Reloading {
    pub fn set(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(key));
    }

    pub fn loaded(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Loads the certificate as soon as its files are there (Citadel may write
/// the Secret after the Pod starts), then again whenever they change;
/// `loaded` runs after each load.
pub async fn keep_certificate(
    files: CertFiles,
    certs: Arc<Reloading>,
    loaded: impl Fn() + Send,
    shutdown: CancellationToken,
) {
    let load = || match files.load() {
        Ok(key) => {
            certs.set(key);
            loaded();
            tracing::info!(cert = %files.cert.display(), "serving certificate loaded");
            true
        }
        Err(e) => {
            tracing::warn!("serving certificate not loaded: {e}");
            false
        }
    };
    let mut wait = Duration::from_millis(200);
    while !load() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    let dir = parent(&files.cert);
    let reload = || async {
        load();
    };
    if let Err(e) = crate::dir::on_changes(&dir, shutdown, reload).await {
        tracing::error!(dir = %dir.display(), "cannot watch the serving certificate: {e}");
    }
}

/// Liveness: the process is running its loops. Waiting for a certificate is
/// not a reason to be restarted, only to be unready (`/ready`).
pub async fn touch_health_file(file: PathBuf, every: Duration, shutdown: CancellationToken) {
    touch_while(file, every, || true, shutdown).await
}

/// As [`touch_health_file`], but the file is touched only while `healthy`
/// says so, and removed while it does not (a readiness probe file).
pub async fn touch_while(
    file: PathBuf,
    every: Duration,
    healthy: impl Fn() -> bool,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !healthy() {
            let _ = std::fs::remove_file(&file);
        } else if let Err(e) = std::fs::write(&file, b"ok") {
            tracing::warn!(file = %file.display(), "health file not written: {e}");
        }
    }
    let _ = std::fs::remove_file(&file);
}

/// `<binary> probe`: healthy while the health file is fresh.
pub fn probe(file: &Path, interval: Duration) -> Result<(), String> {
    let modified = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let age = modified.elapsed().unwrap_or_default();
    if age > interval {
        return Err(format!(
            "{}: last written {age:?} ago (limit {interval:?})",
            file.display()
        ));
    }
    Ok(())
}

/// The directory a file is in (`.` for a bare name).
pub fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// An AdmissionReview that is not one: answered with HTTP 400 and this reason.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct Malformed(pub String);

/// The AdmissionReview versions the API server sends.
const REVIEW_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<AdmissionRequest>,
}

/// The request of an AdmissionReview, as webhooks read it.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    #[serde(default)]
    pub kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub object: Option<serde_json::Value>,
    /// The review's version, which the answer must repeat.
    #[serde(skip)]
    pub api_version: String,
}

#[derive(Debug, serde::Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub kind: String,
}

/// Reads an AdmissionReview (`admission.k8s.io/v1` or `v1beta1`).
pub fn read_review(body: &[u8]) -> Result<AdmissionRequest, Malformed> {
    let review: Review =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
            .map_err(|e| Malformed(format!("AdmissionReview: {}: {}", e.path(), e.inner())))?;
    if !REVIEW_VERSIONS.contains(&review.api_version.as_str()) {
        return Err(Malformed(format!(
            "apiVersion: {:?} is not admission.k8s.io/v1 or admission.k8s.io/v1beta1",
            review.api_version
        )));
    }
    if review.kind != "AdmissionReview" {
        return Err(Malformed(format!(
            "kind: {:?} is not AdmissionReview",
            review.kind
        )));
    }
    let mut request = review
        .request
        .ok_or_else(|| Malformed("request: missing".into()))?;
    if request.uid.is_empty() {
        return Err(Malformed("request.uid: empty".into()));
    }
    request.api_version = review.api_version;
    Ok(request)
}

impl AdmissionRequest {
    /// The AdmissionReview answering this request with `response`.
    pub fn answer(&self, mut response: serde_json::Value) -> serde_json::Value {
        response["uid"] = serde_json::json!(self.uid);
        serde_json::json!({"apiVersion": self.api_version, "kind": "AdmissionReview", "response": response})
    }
}

/// Whether a request's `Content-Type` is JSON, as AdmissionReviews are.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|t| t.trim() == "application/json")
    })
}
