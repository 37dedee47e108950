//! What both Mixer binaries (`mixer-policy server`, `mixer-telemetry
//! server`) share: Istio's `mixs server` flags, their validation, and the
//! config store kept current behind a [`Current`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::adapter::Registry;
use crate::config::Snapshot;
use crate::config::store::{self, Base, Current};

#[derive(Debug, Clone, clap::Args)]
pub struct MixsArgs {
    /// Where config lives: fs:///dir, or mcp://host:port (Galley).
    #[arg(long = "configStoreURL")]
    pub config_store_url: String,
    /// The namespace whose rules apply to every namespace.
    #[arg(long = "configDefaultNamespace", default_value = "istio-system")]
    pub config_default_namespace: String,
    /// gRPC port, on all interfaces unless --address says otherwise.
    #[arg(long = "port", default_value_t = 9091)]
    pub port: u16,
    /// One address to serve on, `tcp://host:port`; the other ports are
    /// bound on the same host.
    #[arg(long = "address")]
    pub address: Option<String>,
    #[arg(long = "monitoringPort", default_value_t = 15014)]
    pub monitoring_port: u16,
    /// Where `mcps://` finds Mixer's own certificates: its `istio.<sa>`
    /// Secret as mounted (`cert-chain.pem`, `key.pem`, `root-cert.pem`).
    #[arg(long = "certDir", default_value = "/etc/certs")]
    pub cert_dir: PathBuf,
    /// Longest an adapter may take to answer.
    #[arg(long = "adapterDeadline", default_value = "1s", value_parser = parse_deadline)]
    pub adapter_deadline: Duration,
}

fn parse_deadline(s: &str) -> Result<Duration, String> {
    let d = api::duration::parse_at_most(s, Duration::from_secs(60))?;
    if d.is_zero() {
        return Err("must be positive".into());
    }
    Ok(d)
}

/// What is checked before any port is bound.
#[derive(Debug, Clone)]
pub struct Validated {
    pub store: store::Url,
    pub grpc: SocketAddr,
    pub monitoring: SocketAddr,
}

impl MixsArgs {
    pub fn validate(&self) -> Result<Validated, String> {
        let store = store::parse_url(&self.config_store_url)
            .map_err(|e| format!("--configStoreURL: {e}"))?;
        if let store::Url::Dir(dir) = &store
            && !dir.is_dir()
        {
            return Err(format!(
                "--configStoreURL: {} is not a directory",
                dir.display()
            ));
        }
        let grpc: SocketAddr = match &self.address {
            Some(a) => a
                .strip_prefix("tcp://")
                .ok_or_else(|| format!("--address {a:?}: expected tcp://host:port"))?
                .parse()
                .map_err(|e| format!("--address {a:?}: {e}"))?,
            None => SocketAddr::from(([0, 0, 0, 0], self.port)),
        };
        Ok(Validated {
            store,
            monitoring: self.on_host(&grpc, self.monitoring_port),
            grpc,
        })
    }

    /// `port` on the host the gRPC port is bound to.
    pub fn on_host(&self, grpc: &SocketAddr, port: u16) -> SocketAddr {
        SocketAddr::new(grpc.ip(), port)
    }
}

impl Validated {
    /// The directory of an `fs://` store: local mode keeps the Pods the
    /// `kubernetesenv` adapter reads beside the config.
    pub fn config_dir(&self) -> Option<PathBuf> {
        match &self.store {
            store::Url::Dir(dir) => Some(dir.clone()),
            store::Url::Mcp { .. } => None,
        }
    }
}

/// The config store, kept current by `task`.
pub struct Store {
    pub current: Current,
    pub task: JoinHandle<()>,
    /// True once the store has loaded (at once for a directory; after
    /// Galley's first complete push for MCP): readiness.
    pub synced: watch::Receiver<bool>,
}

/// Loads the config store and keeps it current until `shutdown`.
/// `on_change` sees every snapshot, the first included.
pub fn start_config(
    args: &MixsArgs,
    valid: &Validated,
    base: Base,
    adapters: Registry,
    on_change: impl Fn(&Snapshot) + Send + Sync + 'static,
    shutdown: CancellationToken,
) -> Store {
    let ns = args.config_default_namespace.clone();
    match &valid.store {
        store::Url::Dir(dir) => {
            tracing::info!(dir = %dir.display(), namespace = %ns, "loading config");
            let first = store::initial(dir, &ns, &base, &adapters);
            on_change(&first);
            let current = Current::new(first);
            let watch = store::watch(
                dir.clone(),
                ns,
                base,
                adapters,
                current.clone(),
                on_change,
                shutdown,
            );
            // A watch that cannot start (inotify limits, say) is said at once: the
            // loaded config keeps serving, but edits will not be seen.
            let task = tokio::spawn(async move {
                if let Err(e) = watch.await {
                    tracing::error!(
                        "cannot watch the config directory; edits will not be seen: {e}"
                    );
                }
            });
            Store {
                current,
                task,
                synced: watch::channel(true).1,
            }
        }
        store::Url::Mcp { address, tls } => {
            tracing::info!(%address, mutual_tls = tls, namespace = %ns, "reading config from MCP");
            let empty = Snapshot::empty(&ns);
            let (objects, errors) = base.under((Vec::new(), Vec::new()));
            let first = Snapshot::build(&objects, errors, &empty, &adapters);
            on_change(&first);
            let current = Current::new(first);
            let (synced_tx, synced) = watch::channel(false);
            let task = tokio::spawn(crate::config::mcp::follow(
                address.clone(),
                tls.then(|| mesh::tls::MountedCerts::in_dir(&args.cert_dir)),
                base,
                adapters,
                current.clone(),
                on_change,
                synced_tx,
                shutdown,
            ));
            Store {
                current,
                task,
                synced,
            }
        }
    }
}

/// `/ready`: 200 once the config store has loaded, else 503.
pub fn ready(synced: &watch::Receiver<bool>) -> (axum::http::StatusCode, &'static str) {
    if *synced.borrow() {
        (axum::http::StatusCode::OK, "ready\n")
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "config store not synced yet\n",
        )
    }
}

/// `/debug/configz`: what the current config holds and what it rejected.
pub fn configz(current: &Current) -> serde_json::Value {
    let s = current.get();
    serde_json::json!({
        "generation": s.generation,
        "objects": s.objects,
        "rules": s.rules.iter().map(|r| &r.name).collect::<Vec<_>>(),
        "handlers": s.handlers.keys().collect::<Vec<_>>(),
        "errors": s.errors,
    })
}
