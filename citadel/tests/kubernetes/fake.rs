//! The scripted API server: each request recorded, then answered as the
//! test's responder decides.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

pub type ResponseBody = BoxBody<Bytes, Infallible>;
pub type Events = mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

/// How long anything the test waits for may take before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubernetes")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture json")
}

/// A `Status` as the API server sends with a failure.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
}

/// One request as the fake API server received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Seen {
    pub fn param(&self, key: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| percent_decode(v))
    }

    pub fn is_watch(&self) -> bool {
        self.param("watch").as_deref() == Some("true")
    }
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                out.push(u8::from_str_radix(&hex, 16).expect("percent escape"));
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).expect("utf-8 query")
}

pub enum Reply {
    Json(StatusCode, Value),
    /// Answered once the test drops or fires the sender.
    Gated(oneshot::Receiver<()>, StatusCode, Value),
    /// A WATCH kept open; the test writes its events.
    Watch,
}

pub fn json_response(code: StatusCode, body: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

pub struct FakeApi {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Open WATCHes by resource (`serviceaccounts`, `namespaces`).
    watches: watch::Receiver<HashMap<String, Events>>,
}

impl FakeApi {
    pub fn start(
        mut respond: impl FnMut(&Seen) -> Reply + Send + 'static,
    ) -> (kube::Client, FakeApi) {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<Body>, Response<ResponseBody>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (watches_tx, watches) = watch::channel(HashMap::new());
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                let request = Seen {
                    method: parts.method,
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    content_type: parts
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    body: if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).expect("a JSON request body")
                    },
                };
                let reply = respond(&request);
                let resource = request.path.rsplit('/').next().unwrap_or_default();
                let resource = resource.to_string();
                log.lock().unwrap().push(request);
                match reply {
                    Reply::Json(code, body) => send.send_response(json_response(code, &body)),
                    Reply::Gated(gate, code, body) => {
                        tokio::spawn(async move {
                            let _ = gate.await;
                            send.send_response(json_response(code, &body));
                        });
                    }
                    Reply::Watch => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        watches_tx.send_modify(|w| {
                            w.insert(resource, tx);
                        });
                        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
                        let response = Response::builder()
                            .status(StatusCode::OK)
                            .body(StreamBody::new(stream).boxed())
                            .expect("response");
                        send.send_response(response);
                    }
                }
            }
        });
        (
            kube::Client::new(service, "default"),
            FakeApi { seen, watches },
        )
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The open WATCH of `resource`, once the client has opened it.
    pub async fn watch_of(&self, resource: &str) -> Events {
        let mut watches = self.watches.clone();
        let open = tokio::time::timeout(WAIT, watches.wait_for(|w| w.contains_key(resource)))
            .await
            .unwrap_or_else(|_| panic!("no WATCH of {resource} opened"))
            .expect("fake API server running");
        open[resource].clone()
    }
}

pub fn send_event(watch: &Events, kind: &str, object: &Value) {
    let line = json!({"type": kind, "object": object}).to_string() + "\n";
    watch
        .send(Ok(Frame::data(Bytes::from(line))))
        .expect("watch open");
}
