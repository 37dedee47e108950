//! `/app-health/<container>/livez|readyz|startupz` on the status port: the
//! app's own probes, rewritten by the injector and carried in
//! `ISTIO_KUBE_APP_PROBERS`, run by the agent from inside the Pod, where
//! mutual TLS does not stand between the kubelet and the app. As the
//! kubelet: HTTP(S) GET answered 200–399 passes (HTTPS certificates are not
//! checked), a TCP connect that succeeds passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub const ENV: &str = "ISTIO_KUBE_APP_PROBERS";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prober {
    #[serde(default)]
    http_get: Option<HttpGet>,
    #[serde(default)]
    tcp_socket: Option<TcpSocket>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpGet {
    #[serde(default)]
    path: Option<String>,
    port: u16,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    http_headers: Vec<Header>,
}

#[derive(Debug, Clone, Deserialize)]
struct Header {
    name: String,
    value: String,
}

#[derive(Debug, Clone, Deserialize)]
struct TcpSocket {
    port: u16,
    #[serde(default)]
    host: Option<String>,
}

/// The probers by path, and where the app listens.
#[derive(Debug, Clone, Default)]
pub struct AppProbers {
    probers: Arc<HashMap<String, Prober>>,
    app_host: String,
}

impl AppProbers {
    /// From the environment variable's value; an error names the prober.
    pub fn parse(value: Option<&str>, app_host: &str) -> Result<AppProbers, String> {
        let probers: HashMap<String, Prober> = match value.map(str::trim) {
            None | Some("") => HashMap::new(),
            Some(text) => {
                serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text))
                    .map_err(|e| format!("{ENV}: {}: {}", e.path(), e.inner()))?
            }
        };
        for (path, p) in &probers {
            if !path.starts_with("/app-health/") {
                return Err(format!("{ENV}: {path:?}: not an /app-health/ path"));
            }
            if p.http_get.is_some() == p.tcp_socket.is_some() {
                return Err(format!(
                    "{ENV}: {path}: needs exactly one of httpGet and tcpSocket"
                ));
            }
            if let Some(scheme) = p.http_get.as_ref().and_then(|g| g.scheme.as_deref())
                && !scheme.eq_ignore_ascii_case("http")
                && !scheme.eq_ignore_ascii_case("https")
            {
                return Err(format!(
                    "{ENV}: {path}: httpGet.scheme {scheme:?} is not HTTP or HTTPS"
                ));
            }
        }
        Ok(AppProbers {
            probers: Arc::new(probers),
            app_host: app_host.to_string(),
        })
    }

    pub fn len(&self) -> usize {
        self.probers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.probers.is_empty()
    }

    /// `None` when no prober has this path; else whether the app passed, and why not.
    pub async fn check(&self, path: &str) -> Option<Result<(), String>> {
        let prober = self.probers.get(path)?;
        let timeout = Duration::from_secs(prober.timeout_seconds.unwrap_or(1).max(1));
        let run = async {
            if let Some(get) = &prober.http_get {
                self.http(get).await
            } else if let Some(tcp) = &prober.tcp_socket {
                let host = tcp.host.as_deref().unwrap_or(&self.app_host);
                TcpStream::connect((host, tcp.port))
                    .await
                    .map(drop)
                    .map_err(|e| format!("tcp {host}:{}: {e}", tcp.port))
            } else {
                Err("no prober".into())
            }
        };
        Some(match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        })
    }

    async fn http(&self, get: &HttpGet) -> Result<(), String> {
        let host = get.host.as_deref().unwrap_or(&self.app_host);
        let path = get.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
        let tcp = TcpStream::connect((host, get.port))
            .await
            .map_err(|e| format!("{host}:{}: {e}", get.port))?;
        let https = get
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"));
        let status = if https {
            let name =
                ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(insecure_client()?)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("https {host}:{}: {e}", get.port))?;
            request(tls, host, get, path).await?
        } else {
            request(tcp, host, get, path).await?
        };
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("GET {path} answered {status}"))
        }
    }
}

/// One HTTP/1.1 GET, as the kubelet sends it; the status code of the answer.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    get: &HttpGet,
    path: &str,
) -> Result<u16, String> {
    if !path.starts_with('/') || path.contains(|c: char| c.is_ascii_whitespace() || c.is_control())
    {
        return Err(format!("httpGet.path {path:?} is not a request path"));
    }
    let authority = if host.contains(':') {
        format!("[{host}]:{}", get.port)
    } else {
        format!("{host}:{}", get.port)
    };
    // The probe's own headers replace the kubelet's defaults of the same name.
    let mut headers: Vec<(String, String)> = vec![
        ("Host".into(), authority),
        ("User-Agent".into(), "kube-probe/1.16".into()),
        ("Accept".into(), "*/*".into()),
    ];
    for h in &get.http_headers {
        if h.name.is_empty()
            || h.name
                .contains(|c: char| c.is_control() || c == ':' || c.is_ascii_whitespace())
            || h.value.contains(['\r', '\n'])
        {
            return Err(format!("httpHeaders: {:?} is not a header", h.name));
        }
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&h.name));
        headers.push((h.name.clone(), h.value.clone()));
    }
    let mut head = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = stream
            .read(&mut buf[got..])
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    // "HTTP/1.1 200 ..."
    std::str::from_utf8(&buf[..got])
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP answer"))
}

fn insecure_client() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The kubelet does not check an HTTPS probe's certificate; neither do we.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// An app on 127.0.0.1 answering every request with `status`, over TLS
    /// with a self-signed certificate when `tls`.
    async fn app(status: u16, tls: bool) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tls.then(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["app.local".into()]).unwrap();
            let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
                .unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    let mut buf = [0u8; 1024];
                    match acceptor {
                        Some(a) => {
                            let mut s = a.accept(tcp).await.unwrap();
                            let _ = s.read(&mut buf).await;
                            let _ = s.write_all(answer.as_bytes()).await;
                            let _ = s.shutdown().await;
                        }
                        None => {
                            let mut s = tcp;
                            let _ = s.read(&mut buf).await;
                            let _ = s.write_all(answer.as_bytes()).await;
                        }
                    }
                });
            }
        });
        port
    }

    fn probers(json: String) -> AppProbers {
        AppProbers::parse(Some(&json), "127.0.0.1").unwrap()
    }

    #[tokio::test]
    async fn https_http_and_tcp_probes_pass_and_fail_as_the_kubelets() {
        let https_ok = app(204, true).await;
        let http_failing = app(500, false).await;
        let redirect = app(302, false).await;
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = probers(format!(
            r#"{{"/app-health/a/livez":{{"httpGet":{{"path":"/h","port":{https_ok},"scheme":"HTTPS"}}}},
                "/app-health/a/readyz":{{"httpGet":{{"port":{http_failing}}}}},
                "/app-health/b/livez":{{"httpGet":{{"port":{redirect}}}}},
                "/app-health/b/readyz":{{"tcpSocket":{{"port":{https_ok}}}}},
                "/app-health/c/readyz":{{"tcpSocket":{{"port":{closed}}}}}}}"#
        ));
        assert_eq!(p.check("/app-health/a/livez").await, Some(Ok(())));
        assert_eq!(
            p.check("/app-health/a/readyz").await,
            Some(Err("GET / answered 500".into()))
        );
        assert_eq!(p.check("/app-health/b/livez").await, Some(Ok(())));
        assert_eq!(p.check("/app-health/b/readyz").await, Some(Ok(())));
        assert!(p.check("/app-health/c/readyz").await.unwrap().is_err());
        assert_eq!(p.check("/app-health/c/livez").await, None);
    }

    #[test]
    fn probers_are_checked_when_the_agent_starts() {
        let ok = AppProbers::parse(
            Some(r#"{"/app-health/app/livez":{"httpGet":{"path":"/live","port":8080,"scheme":"HTTPS"},"timeoutSeconds":2},"/app-health/app/readyz":{"tcpSocket":{"port":8080}}}"#),
            "127.0.0.1",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(AppProbers::parse(None, "127.0.0.1").unwrap().is_empty());
        let e = AppProbers::parse(
            Some(r#"{"/app-health/a/livez":{"httpGet":{"port":"http"}}}"#),
            "h",
        )
        .unwrap_err();
        assert!(
            e.starts_with("ISTIO_KUBE_APP_PROBERS: /app-health/a/livez.httpGet.port: "),
            "{e}"
        );
        let e = AppProbers::parse(Some(r#"{"/x":{"tcpSocket":{"port":1}}}"#), "h").unwrap_err();
        assert!(e.contains("not an /app-health/ path"), "{e}");
        let e = AppProbers::parse(Some(r#"{"/app-health/a/livez":{}}"#), "h").unwrap_err();
        assert!(e.contains("exactly one of httpGet and tcpSocket"), "{e}");
        let e = AppProbers::parse(Some("{"), "h").unwrap_err();
        assert!(e.starts_with("ISTIO_KUBE_APP_PROBERS: "), "{e}");
    }
}
