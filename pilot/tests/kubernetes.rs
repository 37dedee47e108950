//! The Kubernetes registry against a scripted API server.
//!
//! No kube-apiserver can run here, so the client is built over kube-rs's
//! `tower_test` seam, and a task answers its requests the way the API server
//! does: LIST with recorded objects (`tests/fixtures/kubernetes/*.json`, shaped
//! like `kubectl get -o json` output from a cluster running Bookinfo), and
//! WATCH with a stream of events the test writes into.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::{Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use kube::client::Body;
use pilot::registry::kubernetes::KubernetesRegistry;
use pilot::registry::{ClusterState, ServiceRegistry};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

type WatchSenders =
    Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>>>>;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubernetes")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture json")
}

/// Serves LIST from fixtures and keeps each WATCH open, registering its sender
/// under the resource name (`services`, `endpoints`, …).
fn fake_api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<BoxBody<Bytes, Infallible>>>,
    fail_first_list: bool,
) -> WatchSenders {
    let watches = WatchSenders::default();
    let senders = watches.clone();
    tokio::spawn(async move {
        let mut failed = !fail_first_list;
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or_default().to_string();
            let resource = path.rsplit('/').next().unwrap_or_default().to_string();
            let response = if !failed && resource == "services" {
                failed = true;
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
                Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .body(Full::new(Bytes::from(status.to_string())).boxed())
            } else if query.contains("watch=true") {
                let (tx, rx) = mpsc::unbounded_channel();
                senders.lock().unwrap().insert(resource, tx);
                let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
                Response::builder()
                    .status(StatusCode::OK)
                    .body(StreamBody::new(stream).boxed())
            } else {
                let body = fixture(&format!("{resource}.json")).to_string();
                Response::builder()
                    .status(StatusCode::OK)
                    .body(Full::new(Bytes::from(body)).boxed())
            };
            send.send_response(response.expect("response"));
        }
    });
    watches
}

async fn start(
    fail_first_list: bool,
) -> (
    watch::Receiver<Option<Arc<ClusterState>>>,
    WatchSenders,
    CancellationToken,
) {
    let (service, handle) =
        tower_test::mock::pair::<Request<Body>, Response<BoxBody<Bytes, Infallible>>>();
    let watches = fake_api_server(handle, fail_first_list);
    let client = kube::Client::new(service, "default");
    let (tx, rx) = watch::channel(None);
    let shutdown = CancellationToken::new();
    tokio::spawn(Box::new(KubernetesRegistry::new(client)).run(tx, shutdown.clone()));
    (rx, watches, shutdown)
}

async fn next_state(
    rx: &mut watch::Receiver<Option<Arc<ClusterState>>>,
    what: &str,
    f: impl Fn(&ClusterState) -> bool,
) -> Arc<ClusterState> {
    let state = tokio::time::timeout(
        Duration::from_secs(30),
        rx.wait_for(|s| s.as_ref().is_some_and(|s| f(s))),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    .expect("registry running");
    state.clone().expect("state")
}

#[tokio::test]
async fn recorded_cluster_becomes_services_and_instances() {
    let (mut rx, _watches, shutdown) = start(false).await;
    let state = next_state(&mut rx, "first sync", |_| true).await;
    assert_eq!(state.services.len(), 3);
    assert_eq!(state.nodes.len(), 2);

    let model = state.to_model("cluster.local");
    let reviews = &model.services["reviews.default.svc.cluster.local"];
    assert_eq!(reviews.address.as_deref(), Some("10.96.142.18"));
    assert_eq!(reviews.ports[0].port, 9080);
    assert!(reviews.ports[0].protocol.is_http());
    let instances = &model.instances["reviews.default.svc.cluster.local"];
    // The not-ready v3 address is left out.
    let ips: Vec<&str> = instances.iter().map(|i| i.address.as_str()).collect();
    assert_eq!(ips, ["10.244.1.7", "10.244.2.9"]);
    assert_eq!(instances[0].labels["version"], "v1");
    assert_eq!(instances[0].service_account, "bookinfo-reviews");
    assert_eq!(
        instances[0].pod.as_deref(),
        Some("default/reviews-v1-5b8c9d7f6-x2k4p")
    );
    // kube-dns keeps only its TCP ports.
    let dns = &model.services["kube-dns.kube-system.svc.cluster.local"];
    assert_eq!(
        dns.ports
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["dns-tcp", "metrics"]
    );
    assert_eq!(
        model.workloads["10.244.2.4"].name,
        "ratings-v1-8d7c6b5a4-t5y6u"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn watch_events_update_the_state() {
    let (mut rx, watches, shutdown) = start(false).await;
    next_state(&mut rx, "first sync", |_| true).await;
    let endpoints_watch = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(tx) = watches.lock().unwrap().get("endpoints").cloned() {
                return tx;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("endpoints watch opened");

    // reviews-v2 goes away: the API server sends MODIFIED Endpoints.
    let mut reviews = fixture("endpoints.json")["items"][0].clone();
    reviews["metadata"]["resourceVersion"] = json!("2050");
    reviews["subsets"][0]["addresses"]
        .as_array_mut()
        .unwrap()
        .pop();
    let event = json!({"type": "MODIFIED", "object": reviews}).to_string() + "\n";
    endpoints_watch
        .send(Ok(Frame::data(Bytes::from(event))))
        .unwrap();
    let state = next_state(&mut rx, "reviews with one address", |s| {
        s.endpoints["default/reviews"].subsets.as_ref().unwrap()[0]
            .addresses
            .as_ref()
            .unwrap()
            .len()
            == 1
    })
    .await;
    assert_eq!(
        state.to_model("cluster.local").instances["reviews.default.svc.cluster.local"].len(),
        1
    );

    // And ratings is deleted.
    let ratings = fixture("endpoints.json")["items"][1].clone();
    let event = json!({"type": "DELETED", "object": ratings}).to_string() + "\n";
    endpoints_watch
        .send(Ok(Frame::data(Bytes::from(event))))
        .unwrap();
    next_state(&mut rx, "ratings endpoints deleted", |s| {
        !s.endpoints.contains_key("default/ratings")
    })
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn a_failing_list_is_retried() {
    let (mut rx, _watches, shutdown) = start(true).await;
    let state = next_state(&mut rx, "sync after a 500 from the API server", |_| true).await;
    assert_eq!(state.services.len(), 3);
    shutdown.cancel();
}
