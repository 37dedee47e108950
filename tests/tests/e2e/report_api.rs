//! Istio's Mixer API (`istio.mixer.v1.Mixer/Report`) against the real
//! mixer-telemetry, with compressed attributes built as Istio's proxy sent
//! them: batched, with shared default words or delta-encoded, and broken.

use std::time::{Duration, SystemTime};

use api::mixer::mixer_client::MixerClient;
use api::mixer::report_request::RepeatedAttributesSemantics;
use api::mixer::{CheckRequest, CompressedAttributes, ReportRequest};
use mixer::attribute::compressed::encode;
use mixer::attribute::{Bag, Value, dictionary};
use opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue;
use tempfile::TempDir;
use tonic::Code;
use trireme_tests::eventually;
use trireme_tests::mesh::next_subnet;
use trireme_tests::mixer::start_mixer;
use trireme_tests::otlp::Collector;
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
    async fn start(extra: &[(&str, String)]) -> Telemetry {
        Telemetry::start_on(&format!("127.{}.0.20", next_subnet()), extra).await
    }

    async fn start_on(ip: &str, extra: &[(&str, String)]) -> Telemetry {
        let ip = ip.to_string();
        let dir = tempfile::Builder::new()
            .prefix("trireme-report-api-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("pods.yaml"), PODS).expect("pods");
        for (file, text) in extra {
            std::fs::write(dir.path().join(file), text).expect("config");
        }
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
    let start = SystemTime::now();
    let took = Duration::from_millis(3);
    bag.set("request.time", Value::Timestamp(start));
    bag.set("response.duration", Value::Duration(took));
    bag.set("response.time", Value::Timestamp(start + took));
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
    let t = Telemetry::start(&[]).await;

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
    let t = Telemetry::start(&[]).await;
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

/// Istio's tracespan instance from B3 headers, exported by the
/// opentelemetry adapter to `collector`.
fn tracing_config(collector: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: otel, namespace: istio-system}}
spec:
  compiledAdapter: opentelemetry
  params:
    endpoint: http://{collector}
    flushInterval: 100ms
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: default, namespace: istio-system}}
spec:
  compiledTemplate: tracespan
  params:
    traceId: request.headers["x-b3-traceid"]
    spanId: request.headers["x-b3-spanid"] | ""
    parentSpanId: request.headers["x-b3-parentspanid"] | ""
    spanName: request.path | "/"
    startTime: request.time
    endTime: response.time | request.time
    clientSpan: (context.reporter.kind | "inbound") == "outbound"
    rewriteClientSpanId: "false"
    sourceName: source.workload.name | "unknown"
    destinationName: destination.workload.name | "unknown"
    httpStatusCode: response.code | 0
    spanTags:
      http.url: request.path | ""
      destination.service: destination.service.host | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: tracing, namespace: istio-system}}
spec:
  match: (request.headers["x-b3-sampled"] | "0") == "1"
  actions:
  - handler: otel
    instances: [default]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_become_spans_at_an_opentelemetry_collector() {
    let ip = format!("127.{}.0.20", next_subnet());
    let collector = Collector::start(&ip).await;
    let t = Telemetry::start_on(
        &ip,
        &[("tracing.yaml", tracing_config(&collector.addr.to_string()))],
    )
    .await;
    let b3 = |sampled: &str| {
        let mut bag = request(200);
        bag.set(
            "request.headers",
            Value::StringMap(std::sync::Arc::new(
                [
                    (
                        "x-b3-traceid".to_string(),
                        "463ac35c9f6413ad48485a3953bb6124".to_string(),
                    ),
                    ("x-b3-spanid".to_string(), "a2fb4a1d1a96d312".to_string()),
                    ("x-b3-sampled".to_string(), sampled.to_string()),
                ]
                .into(),
            )),
        );
        encode(&bag)
    };
    t.report(batch(
        vec![b3("1"), b3("0")],
        RepeatedAttributesSemantics::IndependentEncoding,
    ))
    .await
    .expect("report");
    let spans = eventually(
        "the span at the collector",
        Duration::from_secs(10),
        || async {
            let got = collector.received();
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    assert_eq!(spans.len(), 1, "only the sampled request: {spans:#?}");
    let resource = &spans[0];
    let service = &resource.resource.as_ref().expect("resource").attributes[0];
    assert_eq!(service.key, "service.name");
    let name = service.value.as_ref().and_then(|v| v.value.as_ref());
    assert_eq!(name, Some(&StringValue("reviews-v2".into())));
    let span = &resource.scope_spans[0].spans[0];
    assert_eq!(span.name, "/reviews/0");
    assert_eq!(span.trace_id[..4], [0x46, 0x3a, 0xc3, 0x5c]);
    assert_eq!(
        span.span_id,
        [0xa2, 0xfb, 0x4a, 0x1d, 0x1a, 0x96, 0xd3, 0x12]
    );
    assert_eq!(
        span.end_time_unix_nano - span.start_time_unix_nano,
        3_000_000,
        "{span:?}"
    );
    // The collector holds the spans before its answer reaches the outbox,
    // which counts them only then.
    eventually(
        "mixer_opentelemetry_spans_exported_total 1",
        Duration::from_secs(10),
        || async {
            let own = t.get(15014).await;
            (series_value(&own, "mixer_opentelemetry_spans_exported_total", &[]) == Some(1.0))
                .then_some(())
        },
    )
    .await;
}

/// An access-log entry as Envoy's inbound logger writes one for a request
/// from productpage to reviews, its path as raw bytes.
fn access_log_entry(path: &[u8]) -> Vec<u8> {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address,
    };
    use envoy_types::pb::envoy::data::accesslog::v3::{
        AccessLogCommon, HttpAccessLogEntry, HttpRequestProperties, HttpResponseProperties,
    };
    use envoy_types::pb::google::protobuf::UInt32Value;
    use prost::Message;

    let socket = |ip: &str, port| {
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        })
    };
    // A placeholder path of the same length, swapped for the raw bytes, so
    // that bytes which are not UTF-8 can be sent.
    let placeholder = "~".repeat(path.len());
    let entry = HttpAccessLogEntry {
        common_properties: Some(AccessLogCommon {
            downstream_remote_address: socket("10.1.0.1", 40000),
            downstream_local_address: socket("10.1.0.2", 9080),
            upstream_cluster: "inbound|9080|http|reviews.default.svc.cluster.local".into(),
            ..Default::default()
        }),
        request: Some(HttpRequestProperties {
            path: placeholder.clone(),
            ..Default::default()
        }),
        response: Some(HttpResponseProperties {
            response_code: Some(UInt32Value { value: 200 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut bytes = entry.encode_to_vec();
    let at = bytes
        .windows(path.len())
        .position(|w| w == placeholder.as_bytes())
        .expect("the path");
    bytes[at..at + path.len()].copy_from_slice(path);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_streams_are_read_entry_by_entry_and_broken_entries_refused() {
    use api::als_wire::StreamAccessLogsResponse;
    use api::als_wire::{Identifier, LogEntries, Node, StreamAccessLogsMessage};

    let t = Telemetry::start(&[]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}:9091", t.ip))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    // The server's own message types, as a client: their entries are bytes,
    // so a broken one can be sent.
    let mut grpc = tonic::client::Grpc::new(channel);
    let message = |identifier, entries: Vec<Vec<u8>>| StreamAccessLogsMessage {
        identifier,
        http_logs: Some(LogEntries {
            log_entry: entries.into_iter().map(Into::into).collect(),
        }),
        tcp_logs: None,
    };
    let identifier = Identifier {
        node: Some(Node {
            id: "sidecar~10.1.0.2~reviews-v2-7f99cc4496-gdxfn.default~default.svc.cluster.local"
                .into(),
        }),
        log_name: "inbound".into(),
    };
    let messages = vec![
        message(
            Some(identifier),
            vec![
                access_log_entry(b"/reviews/1"),
                access_log_entry(b"/reviews/2"),
            ],
        ),
        message(
            None,
            vec![
                access_log_entry(b"/reviews/3"),
                access_log_entry(b"/reviews/\xff"),
            ],
        ),
    ];
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs",
    );
    grpc.ready().await.expect("ready");
    let err = grpc
        .client_streaming::<_, _, StreamAccessLogsResponse, _>(
            tonic::Request::new(tokio_stream::iter(messages)),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "http_logs.log_entry[1]: request.path: not UTF-8"
    );

    // The first message was accepted and counted; nothing of the refused
    // one was.
    t.requests("200", 2.0).await;
    let own = t.get(15014).await;
    assert!(
        own.contains("mixer_report_bad_requests_total{api=\"als\"} 1"),
        "{own}"
    );
}
