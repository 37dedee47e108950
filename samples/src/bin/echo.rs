//! A tiny HTTP backend that says who it is: every response is JSON naming the
//! service, version and pod, with the request's path and headers. `/delay/<ms>`
//! answers after that many milliseconds; `/status/<code>` answers with that code;
//! `/requests` says how many requests came before it (mirrored ones included).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use clap::Parser;
use serde_json::json;

static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    #[arg(long, default_value = "echo")]
    service: String,
    #[arg(long, default_value = "v1")]
    version: String,
    #[arg(long, default_value = "")]
    pod: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    let app = Router::new()
        .route("/delay/{ms}", get(delay))
        .route("/status/{code}", get(status))
        .route(
            "/requests",
            get(|| async {
                Json(json!({ "requests": REQUESTS.load(std::sync::atomic::Ordering::Relaxed) }))
            }),
        )
        .fallback(echo)
        .with_state(args.clone());
    eprintln!(
        "echo {} {} listening on {}",
        args.service, args.version, args.listen
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}

fn body(args: &Args, uri: &Uri, headers: &HeaderMap) -> serde_json::Value {
    REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let headers: BTreeMap<&str, &str> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("<binary>")))
        .collect();
    json!({
        "service": args.service,
        "version": args.version,
        "pod": args.pod,
        "path": uri.path(),
        "headers": headers,
    })
}

async fn echo(State(args): State<Args>, uri: Uri, headers: HeaderMap) -> Json<serde_json::Value> {
    Json(body(&args, &uri, &headers))
}

async fn delay(
    State(args): State<Args>,
    Path(ms): Path<u64>,
    uri: Uri,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    Json(body(&args, &uri, &headers))
}

async fn status(
    State(args): State<Args>,
    Path(code): Path<u16>,
    uri: Uri,
    headers: HeaderMap,
) -> impl IntoResponse {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (code, Json(body(&args, &uri, &headers)))
}
