//! `sidecar-injector` started on its own "pod" address: a CA and a serving
//! certificate made for the test (the files the Helm chart mounts from
//! Citadel's Secret), and an HTTPS client that trusts that CA only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::mesh::wait_ok;
use crate::process::Proc;
use crate::{bin, eventually};

pub const WEBHOOK_PORT: u16 = 8443;

/// A CA and a certificate it signed for `ip`.
pub struct Certs {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    ca_key_pem: String,
}

impl Certs {
    pub fn for_ip(ip: &str) -> Certs {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "injector test CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut leaf = rcgen::CertificateParams::new(vec![
            "istio-sidecar-injector.istio-system.svc".to_string(),
        ])
        .expect("leaf params");
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress(ip.parse().expect("ip")));
        let cert = leaf.signed_by(&key, &issuer).expect("leaf cert");
        Certs {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_key_pem: issuer.key().serialize_pem(),
        }
    }

    /// A client certificate of the same CA for a SPIFFE identity, as
    /// Citadel issues workloads: (certificate, key) in PEM.
    pub fn client_cert(&self, spiffe: &str) -> (String, String) {
        let ca_key = rcgen::KeyPair::from_pem(&self.ca_key_pem).expect("CA key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.ca_pem, ca_key).expect("issuer");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(spiffe).expect("URI"),
        ));
        let cert = params.signed_by(&key, &issuer).expect("client cert");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the chart's file names into `dir`, the key last and each file
    /// renamed into place, as the kubelet swaps a Secret's files.
    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("cert dir");
        for (name, text) in [
            ("root-cert.pem", &self.ca_pem),
            ("cert-chain.pem", &self.cert_pem),
            ("key.pem", &self.key_pem),
        ] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).expect("write cert");
            std::fs::rename(&tmp, dir.join(name)).expect("rename cert");
        }
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA pem"),
            )
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTPS client")
    }
}

pub struct Injector {
    pub proc: Proc,
    pub ip: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Injector {
    /// Starts the injector on `ip` reading its certificates from
    /// `dir/certs` and its injection config from `dir/inject/config` (written
    /// from the built-in one). Does not wait: see [`Injector::wait_ready`].
    pub fn spawn(ip: &str, certs: Option<&Certs>) -> Injector {
        Injector::spawn_with(ip, certs, 1)
    }

    /// As [`Injector::spawn`], with `workers` HTTP workers (0: one per core).
    pub fn spawn_with(ip: &str, certs: Option<&Certs>, workers: usize) -> Injector {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(certs) = certs {
            certs.write(&dir.path().join("certs"));
        }
        std::fs::create_dir_all(dir.path().join("inject")).expect("inject dir");
        std::fs::write(
            dir.path().join("inject/config"),
            injector::config::DEFAULT_INJECT_CONFIG,
        )
        .expect("inject config");
        let path = |p: &str| dir.path().join(p).display().to_string();
        let args: Vec<String> = [
            "--address",
            ip,
            "--port",
            &WEBHOOK_PORT.to_string(),
            "--monitoringPort",
            "15014",
            "--tlsCertFile",
            &path("certs/cert-chain.pem"),
            "--tlsKeyFile",
            &path("certs/key.pem"),
            "--caCertFile",
            &path("certs/root-cert.pem"),
            "--injectConfig",
            &path("inject/config"),
            "--healthCheckFile",
            &path("health"),
            "--healthCheckInterval",
            "100ms",
            "--workers",
            &workers.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let proc = Proc::spawn(
            "sidecar-injector",
            &bin("sidecar-injector"),
            &args,
            &[],
            &dir.path().join("injector.log"),
        );
        Injector {
            proc,
            ip: ip.to_string(),
            dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn monitoring(&self, path: &str) -> String {
        format!("http://{}:15014{path}", self.ip)
    }

    pub fn webhook(&self) -> String {
        format!("https://{}:{WEBHOOK_PORT}/inject", self.ip)
    }

    pub async fn wait_ready(&self) {
        wait_ok(
            &self.http,
            &self.monitoring("/ready"),
            "injector ready",
            Duration::from_secs(20),
        )
        .await;
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.monitoring("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Waits until a review of `pod` answers as `done` says, the config
    /// having been edited.
    pub async fn wait_review(
        &self,
        client: &reqwest::Client,
        pod: &Value,
        done: fn(&Value) -> bool,
    ) -> Value {
        eventually(
            "the injector's answer to change",
            Duration::from_secs(10),
            || async {
                let answer = review(client, &self.webhook(), "admission.k8s.io/v1", pod).await;
                done(&answer).then_some(answer)
            },
        )
        .await
    }
}

/// One AdmissionReview of `pod`, in `api_version`; the answer as JSON.
pub async fn review(client: &reqwest::Client, url: &str, api_version: &str, pod: &Value) -> Value {
    let body = json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "4b1e3d62-8a3c-4b7c-9f25-1c2d3e4f5a6b",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "object": pod,
        },
    });
    let response = client.post(url).json(&body).send().await.expect("review");
    assert_eq!(
        response.status(),
        200,
        "review answered {}",
        response.status()
    );
    response.json().await.expect("review JSON")
}
