//! `pilot-agent proxy sidecar|router`: writes Envoy's bootstrap, runs and
//! supervises Envoy, and answers readiness on the status port.

pub mod app_probe;
pub mod bootstrap;
pub mod envoy;
pub mod iptables;
pub mod sds;
pub mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

pub const INFO: mesh::version::Info =
    mesh::version::Info::new("pilot-agent", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Sidecar,
    Router,
}

#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    #[arg(value_enum)]
    pub role: Role,
    /// Pilot's xDS address.
    #[arg(long = "discoveryAddress", default_value = "istio-pilot:15010")]
    pub discovery_address: String,
    /// The Envoy binary.
    #[arg(long = "binaryPath", default_value = "/usr/local/bin/envoy")]
    pub binary_path: PathBuf,
    /// Directory the bootstrap is written to.
    #[arg(long = "configPath", default_value = "/etc/istio/proxy")]
    pub config_path: PathBuf,
    #[arg(long = "serviceCluster", default_value = "istio-proxy")]
    pub service_cluster: String,
    #[arg(long = "proxyAdminPort", default_value_t = 15000)]
    pub proxy_admin_port: u16,
    #[arg(long = "statusPort", default_value_t = 15020)]
    pub status_port: u16,
    /// Port of the static listener serving Envoy's Prometheus stats.
    #[arg(long = "statsPort", default_value_t = 15090)]
    pub stats_port: u16,
    #[arg(long = "domain", default_value = "")]
    pub domain: String,
    #[arg(long = "drainDuration", default_value = "45s", value_parser = parse_duration)]
    pub drain_duration: Duration,
    #[arg(long = "parentShutdownDuration", default_value = "60s", value_parser = parse_duration)]
    pub parent_shutdown_duration: Duration,
    /// How long in-flight requests get to finish after SIGTERM before Envoy is stopped.
    #[arg(long = "terminationDrainDuration", env = "TERMINATION_DRAIN_DURATION", default_value = "5s", value_parser = parse_duration)]
    pub termination_drain_duration: Duration,
    /// Envoy worker threads; 0 is one per core.
    #[arg(long = "concurrency", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub concurrency: u32,
    /// Where Envoy sends its stats over statsd (`istio-statsd-prom-bridge:9125`);
    /// set when Helm's `global.proxy.envoyStatsd.enabled` is.
    #[arg(long = "statsdUdpAddress", default_value = "")]
    pub statsd_udp_address: String,
    #[arg(long = "proxyLogLevel", default_value = "warning")]
    pub proxy_log_level: String,
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub pod_namespace: String,
    #[arg(long, env = "INSTANCE_IP", default_value = "")]
    pub instance_ip: String,
    /// `MUTUAL_TLS` (Helm's `controlPlaneSecurityEnabled`): Envoy reaches
    /// Pilot over mutual TLS with this proxy's certificate, checking Pilot's.
    #[arg(long = "controlPlaneAuthPolicy", value_enum, default_value = "NONE")]
    pub control_plane_auth_policy: ControlPlaneAuthPolicy,
    /// Pilot's service account in `istio-system`: the identity its
    /// certificate must carry under `MUTUAL_TLS`.
    #[arg(long = "pilotIdentity", default_value = "istio-pilot-service-account")]
    pub pilot_identity: String,
    /// Timeout of Envoy's connection to Pilot.
    #[arg(long = "connectTimeout", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// The app's ports, as Istio's template passes them; readiness does
    /// not depend on them here, and they are accepted so that template runs.
    #[arg(long = "applicationPorts", default_value = "")]
    pub application_ports: String,
    #[command(flatten)]
    pub sds: sds::SdsArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ControlPlaneAuthPolicy {
    None,
    MutualTls,
}

/// Drain and shutdown waits beyond an hour would only hold a Pod in Terminating.
fn parse_duration(s: &str) -> Result<Duration, String> {
    api::duration::parse_at_most(s, Duration::from_secs(3600))
}

/// Resolved identity of this proxy.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: String,
    pub ip: String,
    pub metadata: BTreeMap<String, String>,
    /// Where admin, status and stats listen: loopback in a pod, the proxy's own
    /// address in local mode, where the loopback is shared by every "pod".
    pub local_bind: String,
    pub status_bind: String,
}

impl ProxyArgs {
    pub fn identity(
        &self,
        env: impl Iterator<Item = (String, String)>,
    ) -> anyhow::Result<Identity> {
        let ip = if self.instance_ip.is_empty() {
            "127.0.0.1".to_string()
        } else {
            self.instance_ip.clone()
        };
        ip.parse::<std::net::IpAddr>()
            .with_context(|| format!("INSTANCE_IP {ip:?} is not an IP address"))?;
        let pod = if self.pod_name.is_empty() {
            "unknown".to_string()
        } else {
            self.pod_name.clone()
        };
        let ns = &self.pod_namespace;
        let domain = if self.domain.is_empty() {
            format!("{ns}.svc.cluster.local")
        } else {
            self.domain.clone()
        };
        let role = match self.role {
            Role::Sidecar => "sidecar",
            Role::Router => "router",
        };
        let mut metadata = BTreeMap::new();
        for (k, v) in env {
            if let Some(name) = k.strip_prefix("ISTIO_META_") {
                metadata.insert(name.to_string(), v);
            } else if k == "ISTIO_METAJSON_LABELS" {
                metadata.insert("LABELS".to_string(), v);
            }
        }
        metadata.insert("NAMESPACE".into(), ns.clone());
        metadata.insert("POD_NAME".into(), pod.clone());
        metadata.insert("INSTANCE_IPS".into(), ip.clone());
        metadata.insert("ISTIO_VERSION".into(), INFO.version.into());
        let local_mode = metadata.get("INTERCEPTION_MODE").map(String::as_str) == Some("NONE");
        Ok(Identity {
            node_id: format!("{role}~{ip}~{pod}.{ns}~{domain}"),
            local_bind: if local_mode {
                ip.clone()
            } else {
                "127.0.0.1".into()
            },
            status_bind: if local_mode {
                ip.clone()
            } else {
                "0.0.0.0".into()
            },
            ip,
            metadata,
        })
    }
}

/// The statsd sink's address, resolved here: Envoy's sink takes an IP only,
/// and Istio 1.0's proxies refused to start when the bridge's name was
/// given to it. A name that does not resolve (the bridge turned off) leaves
/// the sink out and Envoy starts anyway.
async fn statsd_sink(address: &str) -> Option<std::net::SocketAddr> {
    if address.is_empty() {
        return None;
    }
    match tokio::net::lookup_host(address).await {
        Ok(mut found) => found.next(),
        Err(e) => {
            tracing::warn!(%address, "statsd sink left out; Envoy starts without it: {e}");
            None
        }
    }
}

pub async fn run(args: ProxyArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let identity = args.identity(std::env::vars())?;
    let probers = app_probe::AppProbers::parse(
        std::env::var(app_probe::ENV).ok().as_deref(),
        &identity.local_bind,
    )
    .map_err(anyhow::Error::msg)?;
    if !probers.is_empty() {
        tracing::info!(count = probers.len(), "app probes served on /app-health/");
    }
    if !args.binary_path.exists() {
        anyhow::bail!("--binaryPath {}: no such file", args.binary_path.display());
    }
    std::fs::create_dir_all(&args.config_path)
        .with_context(|| format!("--configPath {}", args.config_path.display()))?;
    let statsd = statsd_sink(&args.statsd_udp_address).await;
    let bootstrap = bootstrap::render(&args, &identity, statsd)?;
    let bootstrap_path = args.config_path.join("envoy-rev0.json");
    std::fs::write(&bootstrap_path, serde_json::to_vec_pretty(&bootstrap)?)
        .with_context(|| format!("writing {}", bootstrap_path.display()))?;
    tracing::info!(node = %identity.node_id, bootstrap = %bootstrap_path.display(), "bootstrap written");

    let status_listener = mesh::server::bind(
        &format!("{}:{}", identity.status_bind, args.status_port),
        "statusPort",
    )
    .await?;
    let admin = format!("http://{}:{}", identity.local_bind, args.proxy_admin_port);
    let status_state =
        status::StatusState::new(admin.clone(), &identity.ip, probers, shutdown.clone());
    let status_task = tokio::spawn(mesh::server::serve_http(
        status_listener,
        status::router(status_state),
        shutdown.clone(),
    ));

    // The node agent starts first: Envoy asks for its secrets on startup.
    let sds_task = match args.sds.socket() {
        Some(path) => {
            mesh::tls::install_crypto_provider();
            let renewer = sds::workload::Renewer::new(args.sds.clone(), &args.pod_namespace);
            tracing::info!(identity = renewer.spiffe(), ca = %args.sds.ca_addr, "node agent: certificates from Citadel");
            let (tx, rx) = tokio::sync::watch::channel(None);
            let shutdown_renew = shutdown.clone();
            tokio::spawn(renewer.run(tx, shutdown_renew));
            let shutdown_sds = shutdown.clone();
            Some(tokio::spawn(async move {
                if let Err(e) = sds::server::serve(&path, rx, shutdown_sds).await {
                    tracing::error!("SDS server failed: {e:#}");
                }
            }))
        }
        None => None,
    };

    let supervisor = envoy::Supervisor {
        binary: args.binary_path.clone(),
        args: envoy::command_args(&args, &identity, &bootstrap_path),
        admin,
        termination_drain: args.termination_drain_duration,
    };
    let result = supervisor.run(shutdown.clone()).await;
    shutdown.cancel();
    let _ = status_task.await;
    if let Some(task) = sds_task {
        let _ = task.await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_statsd_bridge_that_is_not_there_never_stops_envoy() {
        assert_eq!(statsd_sink("").await, None);
        assert_eq!(
            statsd_sink("istio-statsd-prom-bridge.invalid:9125").await,
            None
        );
        assert_eq!(statsd_sink("not an address").await, None);
        assert_eq!(
            statsd_sink("127.0.0.7:9125").await,
            Some("127.0.0.7:9125".parse().unwrap())
        );
    }
}
