//! `galley server` started on its own "pod" address, serving a config
//! directory over MCP (plaintext, `--insecure`, as local mode runs it) and,
//! with certificates, the validating webhook over HTTPS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::bin;
use crate::injector::Certs;
use crate::mesh::wait_ok;
use crate::process::Proc;

pub const WEBHOOK_PORT: u16 = 8443;
pub const MCP_PORT: u16 = 9901;

pub struct Galley {
    pub proc: Option<Proc>,
    pub ip: String,
    config: PathBuf,
    /// Certificates, logs and probe files.
    work: PathBuf,
    validation: bool,
    /// MCP over mutual TLS, admitting these SPIFFE identities; plaintext
    /// (`--insecure`) when `None`.
    allowed: Option<Vec<String>>,
    http: reqwest::Client,
}

impl Galley {
    /// Starts Galley on `ip` serving `config`; `work` holds its files.
    /// With `certs`, the webhook is served too and readiness waits for them.
    pub async fn start(ip: &str, config: &Path, work: &Path, certs: Option<&Certs>) -> Galley {
        Galley::start_with(ip, config, work, certs, None).await
    }

    /// As [`Galley::start`], with MCP over mutual TLS (`certs` serving it)
    /// when `allowed` lists the identities to admit.
    pub async fn start_with(
        ip: &str,
        config: &Path,
        work: &Path,
        certs: Option<&Certs>,
        allowed: Option<&[&str]>,
    ) -> Galley {
        if let Some(certs) = certs {
            certs.write(&work.join("certs"));
        }
        let mut galley = Galley {
            proc: None,
            ip: ip.to_string(),
            config: config.to_path_buf(),
            work: work.to_path_buf(),
            validation: certs.is_some(),
            allowed: allowed.map(|a| a.iter().map(|s| s.to_string()).collect()),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
        };
        galley.restart().await;
        galley
    }

    /// Starts (again) the process, and waits until it is ready.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    pub async fn wait_ready(&self) {
        wait_ok(
            &self.http,
            &self.monitoring("/ready"),
            "galley ready",
            Duration::from_secs(20),
        )
        .await;
    }

    /// Starts (again) the process, without waiting.
    pub fn spawn(&mut self) {
        let path = |p: &str| self.work.join(p).display().to_string();
        let args: Vec<String> = [
            "server",
            "--configPath",
            &self.config.display().to_string(),
            "--server-address",
            &format!("tcp://{}:{MCP_PORT}", self.ip),
            "--monitoringPort",
            "15014",
            "--validation-port",
            &WEBHOOK_PORT.to_string(),
            &format!("--enable-validation={}", self.validation),
            "--tlsCertFile",
            &path("certs/cert-chain.pem"),
            "--tlsKeyFile",
            &path("certs/key.pem"),
            "--caCertFile",
            &path("certs/root-cert.pem"),
            "--meshConfigFile",
            &path("mesh"),
            "--livenessProbePath",
            &path("healthliveness"),
            "--readinessProbePath",
            &path("healthready"),
            "--readinessProbeInterval",
            "100ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut args = args;
        match &self.allowed {
            None => args.push("--insecure".into()),
            Some(allowed) => {
                let list = self.work.join("accesslist.yaml");
                let text = format!("allowed: [{}]\n", allowed.join(", "));
                std::fs::write(&list, text).expect("access list");
                args.extend(["--accessListFile".into(), list.display().to_string()]);
            }
        }
        let log = self.work.join("galley.log");
        // Appended, so a restarted Galley's log follows the first one's.
        let previous = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::write(self.work.join("galley-before-restart.log"), previous).ok();
        self.proc = Some(Proc::spawn("galley", &bin("galley"), &args, &[], &log));
    }

    /// Kills it outright, as a Pod lost with its node.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(nix::sys::signal::Signal::SIGKILL);
            assert!(p.wait_exit(Duration::from_secs(10)), "galley exits");
        }
    }

    pub fn address(&self) -> String {
        format!("{}:{MCP_PORT}", self.ip)
    }

    pub fn monitoring(&self, path: &str) -> String {
        format!("http://{}:15014{path}", self.ip)
    }

    pub fn webhook(&self, path: &str) -> String {
        format!("https://{}:{WEBHOOK_PORT}{path}", self.ip)
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.work.join(p)
    }

    pub async fn metrics(&self) -> String {
        let r = self.http.get(self.monitoring("/metrics")).send().await;
        r.expect("galley metrics").text().await.unwrap_or_default()
    }

    /// The sum of a metric's samples (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        crate::sum_metric(&self.metrics().await, name)
    }
}

/// An AdmissionReview of `object` in `api_version`, as the API server sends.
pub fn admission_review(api_version: &str, operation: &str, object: &Value) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "7d5c1a3e-0d4e-4c4b-9d6e-2f5a8f0e1b2c",
            "kind": {"group": "", "version": "", "kind": object["kind"]},
            "resource": {"group": "", "version": "", "resource": ""},
            "operation": operation,
            "namespace": object["metadata"]["namespace"],
            "userInfo": {"username": "admin"},
            "object": object,
        },
    })
}
