//! mixer-telemetry in the mesh, and a real Prometheus scraping what a test
//! started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::mesh::{Mesh, STARTUP, wait_ok};
use crate::process::Proc;
use crate::{bin, eventually};

impl Mesh {
    /// Starts mixer-telemetry on its own address, reading the same config
    /// directory as Pilot, and waits until it is ready.
    pub async fn start_telemetry(&mut self) {
        let ip = self.topology.telemetry_ip();
        self.telemetry = Some(
            self.start_mixer("mixer-telemetry", &ip, "mixer-telemetry")
                .await,
        );
    }

    /// Starts statsd-bridge on its own address (with `mapping` as its
    /// mapping file unless empty), points the sidecars started after it at
    /// it, and waits until it is ready.
    pub async fn start_statsd_bridge(&mut self, mapping: &str) {
        let ip = self.topology.statsd_bridge_ip();
        let mut args = vec![
            format!("--statsd.listen-udp={ip}:9125"),
            format!("--statsd.listen-tcp={ip}:9125"),
            format!("--web.listen-address={ip}:9102"),
        ];
        if !mapping.is_empty() {
            let path = self.dir.path().join("statsd-mapping.yaml");
            std::fs::write(&path, mapping).expect("mapping");
            args.push(format!("--statsd.mapping-config={}", path.display()));
        }
        let log = self.log("statsd-bridge");
        self.statsd_bridge = Some(Proc::spawn(
            "statsd-bridge",
            &bin("statsd-bridge"),
            &args,
            &[],
            &log,
        ));
        let url = format!("http://{ip}:9102/-/ready");
        wait_ok(&self.http, &url, "statsd-bridge ready", STARTUP).await;
        self.add_agent_args(&["--statsdUdpAddress".into(), format!("{ip}:9125")]);
    }

    /// statsd-bridge's exposition.
    pub async fn statsd_metrics(&self) -> String {
        self.text(&format!(
            "http://{}:9102/metrics",
            self.topology.statsd_bridge_ip()
        ))
        .await
    }

    /// The mesh's metrics, as mixer-telemetry's prometheus adapter serves them.
    pub async fn mesh_metrics(&self) -> String {
        self.text(&format!(
            "http://{}:42422/metrics",
            self.topology.telemetry_ip()
        ))
        .await
    }

    /// mixer-telemetry's own metrics.
    pub async fn telemetry_metrics(&self) -> String {
        self.text(&format!(
            "http://{}:15014/metrics",
            self.topology.telemetry_ip()
        ))
        .await
    }

    async fn text(&self, url: &str) -> String {
        match self.http.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => panic!("{url}: {e}"),
        }
    }
}

/// The value of the series of `metric` whose labels include every pair of
/// `labels`, summed over the series that match (None when none does).
pub fn series_value(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (selector, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((s, v)) => (s, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let all = labels
            .iter()
            .all(|(k, v)| selector.contains(&format!("{k}=\"{v}\"")));
        if all && let Ok(v) = value.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// A Prometheus server (Debian's, found by `scripts/prometheus.sh`) scraping
/// `targets` every second, stopped when dropped.
pub struct Prometheus {
    pub url: String,
    http: reqwest::Client,
    _proc: Proc,
}

fn prometheus_binary() -> PathBuf {
    std::env::var_os("TRIREME_PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("prometheus"))
}

impl Prometheus {
    /// `targets` are `(job, host:port)`; Prometheus listens on `listen`.
    pub async fn start(dir: &Path, listen: &str, targets: &[(&str, String)]) -> Prometheus {
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, target) in targets {
            config.push_str(&format!(
                "- job_name: {job}\n  static_configs:\n  - targets: ['{target}']\n"
            ));
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus config");
        let args: Vec<String> = vec![
            format!("--config.file={}", config_path.display()),
            format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ),
            format!("--web.listen-address={listen}"),
        ];
        let proc = Proc::spawn(
            "prometheus",
            &prometheus_binary(),
            &args,
            &[],
            &dir.join("prometheus.log"),
        );
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let url = format!("http://{listen}");
        wait_ok(
            &http,
            &format!("{url}/-/ready"),
            "Prometheus ready",
            STARTUP,
        )
        .await;
        Prometheus {
            url,
            http,
            _proc: proc,
        }
    }

    /// An instant query's result vector.
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await;
        let Ok(r) = response else {
            return Vec::new();
        };
        let body: Value = r.json().await.unwrap_or_default();
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `expr` has a sample whose value satisfies `ok`, and
    /// returns that sample.
    pub async fn wait_for(&self, expr: &str, ok: impl Fn(f64) -> bool) -> Value {
        eventually(
            &format!("Prometheus: {expr}"),
            Duration::from_secs(30),
            || async {
                self.query(expr).await.into_iter().find(|s| {
                    s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(&ok)
                })
            },
        )
        .await
    }
}
