//! Running Envoy: start it, restart it with backoff when it dies, and drain it
//! on shutdown.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Identity, ProxyArgs};

/// Restarts in a row, each after less than [`HEALTHY_RUN`], before the agent gives up
/// and exits so that its own supervisor (the kubelet) takes over.
const MAX_RESTARTS: u32 = 10;
const HEALTHY_RUN: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub fn command_args(args: &ProxyArgs, id: &Identity, bootstrap: &Path) -> Vec<String> {
    vec![
        "-c".into(),
        bootstrap.display().to_string(),
        "--drain-time-s".into(),
        args.drain_duration.as_secs().to_string(),
        "--parent-shutdown-time-s".into(),
        args.parent_shutdown_duration.as_secs().to_string(),
        "--service-cluster".into(),
        args.service_cluster.clone(),
        "--service-node".into(),
        id.node_id.clone(),
        "--concurrency".into(),
        args.concurrency.to_string(),
        "--log-level".into(),
        args.proxy_log_level.clone(),
        // Several proxies share one machine in local mode; hot restart would need distinct base ids.
        "--disable-hot-restart".into(),
    ]
}

pub struct Supervisor {
    pub binary: PathBuf,
    pub args: Vec<String>,
    pub admin: String,
    pub termination_drain: Duration,
}

impl Supervisor {
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut failures = 0u32;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = Instant::now();
            let mut child = self.spawn()?;
            tracing::info!(pid = child.id(), binary = %self.binary.display(), "envoy started");
            tokio::select! {
                status = child.wait() => {
                    let status = status.context("waiting for envoy")?;
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    if started.elapsed() >= HEALTHY_RUN {
                        failures = 0;
                        backoff = FIRST_BACKOFF;
                    }
                    failures += 1;
                    if failures > MAX_RESTARTS {
                        anyhow::bail!("envoy exited {failures} times in a row ({}); giving up", describe(status));
                    }
                    tracing::warn!(status = %describe(status), restart_in = ?backoff, attempt = failures, "envoy exited; restarting");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                _ = shutdown.cancelled() => {
                    self.drain(&mut child).await;
                    return Ok(());
                }
            }
        }
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        Command::new(&self.binary)
            .args(&self.args)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))
    }

    /// Stops new connections, lets in-flight requests finish, then stops Envoy.
    async fn drain(&self, child: &mut Child) {
        tracing::info!(grace = ?self.termination_drain, "draining envoy");
        let client = reqwest::Client::new();
        let url = format!("{}/drain_listeners?graceful", self.admin);
        if let Err(e) = client
            .post(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            tracing::warn!(error = %e, "could not ask envoy to drain; stopping it directly");
        } else {
            tokio::select! {
                _ = tokio::time::sleep(self.termination_drain) => {}
                _ = child.wait() => return,
            }
        }
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            tracing::warn!("envoy did not stop within 5s of SIGTERM; killing it");
            let _ = child.kill().await;
        }
        tracing::info!("envoy stopped");
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".into(),
    }
}
