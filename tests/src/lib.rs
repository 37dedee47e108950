//! The end-to-end harness: starts the real `pilot-discovery`, `pilot-agent`s
//! with real Envoy, and `echo` backends, each "pod" on its own loopback address
//! (local mode, see docs/local-mode.md), and tears them down afterwards.
//!
//! Every wait is a readiness check polled against a deadline, never a bare sleep.

pub mod citadel;
pub mod galley;
pub mod injector;
pub mod kube_api;
pub mod mesh;
pub mod mixer;
pub mod netns;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod telemetry;
pub mod topology;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the workspace's binaries are: beside the running executable (a bench
/// tool in `target/release`), or one level up from a test's `deps/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let beside = exe.parent().map(|d| d.join(name)).filter(|p| p.exists());
    let path = beside.unwrap_or_else(|| {
        exe.parent()
            .and_then(|d| d.parent())
            .expect("target directory")
            .join(name)
    });
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, done by `make test`)",
        path.display()
    );
    path
}

/// Envoy from `TRIREME_ENVOY`, else the project venv that `make test` installs.
pub fn envoy() -> PathBuf {
    if let Ok(p) = std::env::var("TRIREME_ENVOY") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = root.join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no Envoy: set TRIREME_ENVOY or run `make test`, which installs it under {}",
            lib.display()
        )
    })
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of every sample of metric `name` (any labels) in a Prometheus
/// text page; 0 when there is none.
pub fn sum_metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
