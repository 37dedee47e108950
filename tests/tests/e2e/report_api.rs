//! Istio's Mixer API (`istio.mixer.v1.Mixer/Report`) against the real
//! mixer-telemetry, with compressed attributes built as Istio's proxy sent
//! them: batched, with shared default words or delta-encoded, and broken.

use std::time::{Duration, SystemTime};

use api::mixer::mixer_client::MixerClient;
use api::mixer::report_request::RepeatedAttributesSemantics;
use api::mixer::{CheckRequest, CompressedAttributes, ReportRequest};
use mixer::attribute::compressed::encode;
use mixer::attribute::{Bag, Value, dictionary};
use tempfile::TempDir;
use tonic::Code;
use trireme_tests::eventually;
use trireme_tests::mesh::next_subnet;
use trireme_tests::mixer::start_mixer;
use trireme_tests::process::Proc;
use trireme_tests::telemetry::series_value;

/// Two Pods for kubernetesenv to find behind the reported addresses.
const PODS: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: productpage-v1-6b746f74dc-9stvs\n  namespace: default\n  labels: {app: productpage, version: v1, pod-template-hash: 6b746f74dc}\n  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: productpage-v1-6b746f74dc, uid: a, controller: true}]\nstatus: {podIP: 10.1.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: reviews-v2-7f99cc4496-gdxfn\n  namespace: default\n  labels: {app: reviews, version: v2, pod-template-hash: 7f99cc4496}\n  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v2-7f99cc4496, uid: b, controller: true}]\nstatus: {podIP: 10.1.0.2}\n";

struct Telemetry {
    _dir: TempDir,
    _proc: Proc,
    ip: String,
    client: MixerClient<tonic::transport::Channel>,
    http: reqwest::Client,
}

impl Telemetry {
    async fn start() -> Telemetry {
        let dir = tempfile::Builder::new()
            .prefix("trireme-report-api-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("pods.yaml"), PODS).expect("pods");
        let ip = format!("127.{}.0.20", next_subnet());
        let (proc, client, http) = start_mixer("mixer-telemetry", dir.path(), &ip).await;
        Telemetry {
            _dir: dir,
            _proc: proc,
            ip,
            client,
            http,
        }
    }

    async fn report(&self, request: ReportRequest) -> Result<(), tonic::Status> {
        self.client.clone().report(request).await.map(|_| ())
    }

    async fn get(&self, port: u16) -> String {
        let url = format!("http://{}:{port}/metrics", self.ip);
        match self.http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => panic!("{url}: {e}"),
        }
    }

    /// Waits for the count of destination-reported requests with `code`.
    async fn requests(&self, code: &str, want: f64) {
        eventually(
            &format!("{want} requests with {code}"),
            Duration::from_secs(10),
            || async {
                let text = self.get(42422).await;
                let labels = [
                    ("reporter", "destination"),
                    ("source_workload", "productpage-v1"),
                    ("destination_workload", "reviews-v2"),
                    ("destination_version", "v2"),
                    ("destination_service", "reviews.default.svc.cluster.local"),
                    ("response_code", code),
                ];
                (series_value(&text, "istio_requests_total", &labels) == Some(want)).then_some(())
            },
        )
        .await;
    }
}

/// What Istio's server-side proxy reported for one request.
fn request(code: i64) -> Bag {
    let mut bag = Bag::new();
    bag.set("context.protocol", Value::string("http"));
    bag.set("context.reporter.kind", Value::string("inbound"));
    bag.set("source.ip", Value::IpAddress("10.1.0.1".parse().unwrap()));
    bag.set(
        "destination.ip",
        Value::IpAddress("10.1.0.2".parse().unwrap()),
    );
    bag.set(
        "destination.service.host",
        Value::string("reviews.default.svc.cluster.local"),
    );
    bag.set("request.path", Value::string("/reviews/0"));
    bag.set("request.time", Value::Timestamp(SystemTime::now()));
    bag.set(
        "response.duration",
        Value::Duration(Duration::from_millis(3)),
    );
    bag.set("response.code", Value::Int64(code));
    bag
}

fn batch(sets: Vec<CompressedAttributes>, semantics: RepeatedAttributesSemantics) -> ReportRequest {
    ReportRequest {
        attributes: sets,
        default_words: Vec::new(),
        global_word_count: dictionary::words().len() as u32,
        repeated_attributes_semantics: semantics as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_reports_become_istio_metrics() {
    let t = Telemetry::start().await;

    // Independent sets sharing the request's default words, as Istio's
    // proxy batched them.
    let first = encode(&request(200));
    let shared = first.words.clone();
    let sets = (0..3)
        .map(|_| CompressedAttributes {
            words: Vec::new(),
            ..first.clone()
        })
        .collect();
    let mut independent = batch(sets, RepeatedAttributesSemantics::IndependentEncoding);
    independent.default_words = shared;
    t.report(independent).await.expect("independent batch");
    t.requests("200", 3.0).await;

    // Delta encoding: the second set only changes the response code.
    let mut change = CompressedAttributes::default();
    change.int64s.insert(
        dictionary::index_of("response.code").expect("global word"),
        503,
    );
    let delta = batch(
        vec![encode(&request(200)), change],
        RepeatedAttributesSemantics::DeltaEncoding,
    );
    t.report(delta).await.expect("delta batch");
    t.requests("200", 4.0).await;
    t.requests("503", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_batches_are_refused_whole_and_counted() {
    let t = Telemetry::start().await;
    let mut bad = encode(&request(200));
    bad.strings.insert(-99, -1);
    let request_batch = batch(
        vec![encode(&request(200)), bad],
        RepeatedAttributesSemantics::IndependentEncoding,
    );
    let err = t.report(request_batch).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("attributes[1]: word index -99 is out of range"),
        "{}",
        err.message()
    );

    let mut wrong_type = encode(&request(200));
    wrong_type.int64s.insert(
        dictionary::index_of("request.path").expect("global word"),
        7,
    );
    let err = t
        .report(batch(
            vec![wrong_type],
            RepeatedAttributesSemantics::IndependentEncoding,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("attribute `request.path` is declared STRING"),
        "{}",
        err.message()
    );

    let err = t
        .client
        .clone()
        .check(CheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // Nothing of the refused batches was recorded; an undeclared attribute
    // in a good one is ignored and counted.
    let mut odd = encode(&request(200));
    let n = odd.words.len() as i32;
    odd.words.push("x-proxy-internal.thing".into());
    odd.int64s.insert(-n - 1, 1);
    t.report(batch(
        vec![odd],
        RepeatedAttributesSemantics::IndependentEncoding,
    ))
    .await
    .expect("a batch with an undeclared attribute");
    t.requests("200", 1.0).await;
    let own = t.get(15014).await;
    assert!(
        own.contains("mixer_report_bad_requests_total{api=\"mixer\"} 2"),
        "{own}"
    );
    assert!(own.contains("mixer_undeclared_attributes_total 1"), "{own}");
}
