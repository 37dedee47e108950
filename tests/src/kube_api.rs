//! A stand-in for the Kubernetes API server (none can run here): LIST answers
//! with the recorded Bookinfo objects of `pilot/tests/fixtures/kubernetes`
//! once the test opens the gate, and WATCH stays open without events. Enough
//! for `pilot-discovery --registries Kubernetes` to sync when the test says so.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

pub struct FakeApiServer {
    gate: watch::Sender<bool>,
    pub kubeconfig: PathBuf,
    _task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    /// Serves on `ip`; LIST blocks until [`FakeApiServer::sync`].
    pub async fn start(ip: &str, dir: &Path) -> FakeApiServer {
        let (gate, open) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("bind fake API server");
        let addr = listener.local_addr().expect("address");
        let app = Router::new()
            .route("/api/v1/{resource}", get(serve))
            .with_state(open);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"http://{addr}\"}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\ncurrent-context: fake\n"
            ),
        )
        .expect("write kubeconfig");
        FakeApiServer {
            gate,
            kubeconfig,
            _task: task,
        }
    }

    /// Lets every LIST, waiting or to come, answer.
    pub fn sync(&self) {
        self.gate.send_replace(true);
    }
}

async fn serve(
    State(mut open): State<watch::Receiver<bool>>,
    UrlPath(resource): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if query.unwrap_or_default().contains("watch=true") {
        // Open, and silent: no changes while the test runs.
        return Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>())
            .into_response();
    }
    if open.wait_for(|o| *o).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pilot/tests/fixtures/kubernetes")
        .join(format!("{resource}.json"));
    match std::fs::read(&file) {
        Ok(body) => ([("content-type", "application/json")], body).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
