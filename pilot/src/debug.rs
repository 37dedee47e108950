//! Pilot's HTTP debug surface on `--httpAddr` (Istio's :8080): `/ready` and
//! `/debug/*` pages, all JSON.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::dir::DirSnapshot;
use crate::xds::push::PushContext;
use crate::xds::server::Clients;

#[derive(Clone)]
pub struct DebugState {
    pub ready: watch::Receiver<bool>,
    /// Once cancelled, `/ready` fails so load balancers stop sending new proxies.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub push: watch::Receiver<Arc<PushContext>>,
    pub dir: Option<watch::Receiver<Option<Arc<DirSnapshot>>>>,
    pub clients: Clients,
}

pub fn router(state: DebugState) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/debug/configz", get(configz))
        .route("/debug/syncz", get(syncz))
        .route("/debug/adsz", get(adsz))
        .route("/debug/registryz", get(registryz))
        .route("/debug/endpointz", get(endpointz))
        .route("/debug/push_status", get(push_status))
        .with_state(state)
}

async fn ready(State(s): State<DebugState>) -> impl IntoResponse {
    if s.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if *s.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n")
    }
}

/// Every accepted config object, every rejected one with its error, and the
/// accepted ones ignored for a host another object claims first (`conflicts`).
async fn configz(State(s): State<DebugState>) -> Json<Value> {
    let push = s.push.borrow().clone();
    let objects: Vec<Value> = push
        .config
        .objects
        .values()
        .flat_map(|m| m.values())
        .map(|o| json!({"kind": o.kind, "metadata": o.meta, "spec": o.spec}))
        .collect();
    let rejected = s
        .dir
        .as_ref()
        .and_then(|d| d.borrow().as_ref().map(|snap| snap.rejections.clone()))
        .unwrap_or_default();
    Json(json!({
        "version": push.version,
        "objects": objects,
        "rejected": *rejected,
        "conflicts": push.conflicts(),
    }))
}

#[derive(Deserialize)]
struct ProxyFilter {
    #[serde(rename = "proxyID")]
    proxy_id: Option<String>,
}

/// Per proxy and type: what was sent, what was ACKed, and the last NACK.
async fn syncz(State(s): State<DebugState>, Query(f): Query<ProxyFilter>) -> Json<Value> {
    let clients = s.clients.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let list: Vec<Value> = clients
        .values()
        .filter(|c| f.proxy_id.as_ref().is_none_or(|id| &c.proxy == id))
        .map(|c| {
            json!({
                "proxy": c.proxy,
                "pushVersion": c.push_version,
                "watches": c.watches.iter().map(|(k, w)| (k.short().to_string(), json!(w))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    Json(Value::Array(list))
}

/// The connected ADS streams.
async fn adsz(State(s): State<DebugState>) -> Json<Value> {
    let clients = s.clients.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let list: Vec<Value> = clients
        .values()
        .map(|c| {
            json!({
                "proxy": c.proxy,
                "peer": c.peer,
                "connectedAt": c.connected_at,
                "resources": c.watches.iter().map(|(k, w)| (k.short().to_string(), json!(w.cache.resources))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    Json(json!({ "totalClients": list.len(), "clients": list }))
}

async fn registryz(State(s): State<DebugState>) -> Json<Value> {
    let push = s.push.borrow().clone();
    Json(json!(push.model.services.values().collect::<Vec<_>>()))
}

async fn endpointz(State(s): State<DebugState>) -> Json<Value> {
    let push = s.push.borrow().clone();
    Json(json!(push.model.instances))
}

async fn push_status(State(s): State<DebugState>) -> Json<Value> {
    let push = s.push.borrow().clone();
    Json(json!({
        "version": push.version,
        "full": push.is_full(),
        "services": push.model.services.len(),
        "configs": push.config.len(),
        "outboundClusters": push.outbound_clusters.len(),
        "endpoints": push.endpoints.len(),
    }))
}
