use std::net::SocketAddr;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::version::Info;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (--{flag}): {source}")]
pub struct BindError {
    pub addr: String,
    pub flag: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Binds before anything is served, so a taken port fails startup with the flag
/// that chose it. Accepts Istio's `:15014` form as all interfaces.
pub async fn bind(addr: &str, flag: &'static str) -> Result<TcpListener, BindError> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    TcpListener::bind(&full).await.map_err(|source| BindError {
        addr: addr.to_string(),
        flag,
        source,
    })
}

/// The cores this process may run on: its CPU affinity and cgroup quota
/// (a Pod with `limits.cpu: 2` gets two), at least one.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Accepted connections with Nagle's algorithm off, for a gRPC server fed its
/// own listener (tonic sets it only on listeners it binds itself): a reply
/// written in two pieces must not wait for the peer's delayed ACK (~40 ms).
pub fn incoming_nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// `/metrics` and `/version`, served on every component's monitoring port.
pub fn monitoring_router(metrics: Metrics, info: Info) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route(
            "/version",
            get(move || async move { axum::Json(info.to_json()) }),
        )
}

/// Serves `router` until `shutdown` is cancelled, then lets in-flight requests
/// finish. Handlers may ask who is calling with `ConnectInfo<SocketAddr>`.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::debug!(?addr, "HTTP server started");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}
