//! The agent's status port (15020): `/healthz/ready` is ready only once Envoy
//! is live and has received both clusters and listeners from Pilot.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct StatusState {
    admin: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    /// Who may ask the proxy to quit: the pod itself, from its loopback or its own IP.
    own_addresses: Vec<IpAddr>,
    probers: super::app_probe::AppProbers,
}

impl StatusState {
    pub fn new(
        admin: String,
        pod_ip: &str,
        probers: super::app_probe::AppProbers,
        shutdown: CancellationToken,
    ) -> StatusState {
        let mut own_addresses = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
        own_addresses.extend(pod_ip.parse::<IpAddr>());
        StatusState {
            own_addresses,
            admin,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap_or_default(),
            shutdown,
            probers,
        }
    }
}

pub fn router(state: StatusState) -> Router {
    Router::new()
        .route("/healthz/ready", get(ready))
        .route("/quitquitquit", post(quit))
        .route("/app-health/{container}/{kind}", get(app_health))
        .route(
            "/version",
            get(|| async { axum::Json(super::INFO.to_json()) }),
        )
        .with_state(state)
}

async fn ready(State(s): State<StatusState>) -> impl IntoResponse {
    if s.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        );
    }
    match check(&s).await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// The app's own probe, run for the kubelet: 200 when it passes, 503 with
/// the reason when it does not, 404 for a probe the Pod never declared.
async fn app_health(
    State(s): State<StatusState>,
    Path((container, kind)): Path<(String, String)>,
) -> (StatusCode, String) {
    let path = format!("/app-health/{container}/{kind}");
    match s.probers.check(&path).await {
        None => (StatusCode::NOT_FOUND, format!("no prober for {path}\n")),
        Some(Ok(())) => (StatusCode::OK, "ok\n".into()),
        Some(Err(why)) => {
            tracing::debug!(%path, "app probe failed: {why}");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
        }
    }
}

/// Only POST (the route) and only from the pod's own addresses: anything else
/// on the network reaching port 15020 must not be able to stop a sidecar.
async fn quit(
    State(s): State<StatusState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> (StatusCode, &'static str) {
    if !s.own_addresses.contains(&peer.ip().to_canonical()) {
        tracing::warn!(%peer, "quitquitquit refused: not from this pod");
        return (
            StatusCode::FORBIDDEN,
            "only the pod itself may stop its proxy\n",
        );
    }
    tracing::info!(%peer, "quitquitquit received; shutting down");
    s.shutdown.cancel();
    (StatusCode::OK, "ok\n")
}

/// Envoy's own counters say whether it is live and has taken config from Pilot.
async fn check(s: &StatusState) -> Result<(), String> {
    let url = format!(
        "{}/stats?filter=^(server\\.state|cluster_manager\\.cds\\.update_success|listener_manager\\.lds\\.update_success)$",
        s.admin
    );
    let body = s
        .client
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("envoy admin not reachable: {e}"))?
        .text()
        .await
        .map_err(|e| format!("envoy admin: {e}"))?;
    let stats = parse_stats(&body);
    match stats.get("server.state") {
        Some(0) => {}
        Some(s) => return Err(format!("envoy is not live (server.state {s})")),
        None => return Err("envoy did not report server.state".into()),
    }
    if stats
        .get("cluster_manager.cds.update_success")
        .copied()
        .unwrap_or(0)
        == 0
    {
        return Err("no clusters received from pilot yet".into());
    }
    if stats
        .get("listener_manager.lds.update_success")
        .copied()
        .unwrap_or(0)
        == 0
    {
        return Err("no listeners received from pilot yet".into());
    }
    Ok(())
}

fn parse_stats(body: &str) -> std::collections::HashMap<&str, u64> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| v.trim().parse().ok().map(|v| (k.trim(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_stats;

    #[test]
    fn reads_envoy_stats_text() {
        let s = parse_stats("server.state: 0\ncluster_manager.cds.update_success: 3\nweird line\n");
        assert_eq!(s.get("server.state"), Some(&0));
        assert_eq!(s.get("cluster_manager.cds.update_success"), Some(&3));
        assert_eq!(s.len(), 2);
    }
}
