//! Istio's Mixer API (`istio.mixer.v1.Mixer/Check`) against the real
//! mixer-policy binary, with compressed attributes built by hand as a proxy
//! sends them, and an out-of-process adapter (samples' `list-adapter`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api::mixer::check_request::QuotaParams;
use api::mixer::mixer_client::MixerClient;
use api::mixer::referenced_attributes::Condition;
use api::mixer::{CheckRequest, CheckResponse, CompressedAttributes, ReportRequest};
use mixer::attribute::compressed::encode;
use mixer::attribute::{Bag, Value, dictionary};
use tempfile::TempDir;
use tonic::Code;
use trireme_tests::mesh::next_subnet;
use trireme_tests::mixer::{DENY_BLOCKED_USER, start_mixer};
use trireme_tests::process::Proc;
use trireme_tests::{bin, eventually};

/// Quotas by source name, and a header every admitted request gets.
const QUOTA: &str = r#"
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: quotas, namespace: istio-system}
spec:
  compiledAdapter: memquota
  params:
    quotas:
    - {name: requestcount.instance.istio-system, maxAmount: 2, validDuration: 60s}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec:
  compiledTemplate: quota
  params:
    dimensions: {source: source.name | "unknown"}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: quota, namespace: istio-system}
spec:
  actions:
  - {handler: quotas, instances: [requestcount]}
  requestHeaderOperations:
  - name: x-checked-by
    values: ['"mixer-policy"']
"#;

/// The out-of-process adapter: an `adapter` object naming its template, a
/// handler pointing at its address, a rule for one destination only.
fn remote_config(address: &str) -> String {
    format!(
        r#"
apiVersion: config.istio.io/v1alpha2
kind: adapter
metadata: {{name: list-sample, namespace: istio-system}}
spec:
  description: samples/list-adapter
  session_based: false
  templates: [listentry]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {{name: remote-list, namespace: istio-system}}
spec:
  adapter: list-sample
  connection: {{address: "{address}"}}
  params:
    entries: [productpage, reviews]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {{name: sourcename, namespace: istio-system}}
spec:
  compiledTemplate: listentry
  params:
    value: source.name | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {{name: remote, namespace: istio-system}}
spec:
  match: destination.service.name == "ratings"
  actions:
  - {{handler: remote-list, instances: [sourcename]}}
"#
    )
}

struct Policy {
    _dir: TempDir,
    _procs: Vec<Proc>,
    ip: String,
    client: MixerClient<tonic::transport::Channel>,
    http: reqwest::Client,
}

impl Policy {
    async fn start(extra: &[(&str, &str)]) -> Policy {
        let dir = tempfile::Builder::new()
            .prefix("trireme-mixer-api-")
            .tempdir()
            .expect("tempdir");
        let ip = format!("127.{}.0.10", next_subnet());
        let adapter = format!("{}:44225", ip.replace(".0.10", ".0.11"));
        std::fs::write(dir.path().join("deny.yaml"), DENY_BLOCKED_USER).expect("config");
        std::fs::write(dir.path().join("quota.yaml"), QUOTA).expect("config");
        std::fs::write(dir.path().join("remote.yaml"), remote_config(&adapter)).expect("config");
        for (file, text) in extra {
            std::fs::write(dir.path().join(file), text).expect("config");
        }
        let mut procs = vec![Proc::spawn(
            "list-adapter",
            &bin("list-adapter"),
            &["--listen".into(), adapter.clone()],
            &[],
            &dir.path().join("list-adapter.log"),
        )];
        let (policy, client, http) = start_mixer("mixer-policy", dir.path(), &ip).await;
        procs.push(policy);
        eventually("the adapter's port", Duration::from_secs(10), || {
            let adapter = adapter.clone();
            async move { tokio::net::TcpStream::connect(adapter).await.ok() }
        })
        .await;
        Policy {
            _dir: dir,
            _procs: procs,
            ip,
            client,
            http,
        }
    }

    async fn check(&self, request: CheckRequest) -> Result<CheckResponse, tonic::Status> {
        self.client
            .clone()
            .check(request)
            .await
            .map(|r| r.into_inner())
    }

    /// Sends a request as bytes the typed client would never produce.
    async fn check_raw(
        &self,
        request: api::mixer_wire::CheckRequest,
    ) -> Result<CheckResponse, tonic::Status> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}:9091", self.ip))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let codec =
            tonic_prost::ProstCodec::<api::mixer_wire::CheckRequest, CheckResponse>::default();
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/istio.mixer.v1.Mixer/Check");
        grpc.unary(tonic::Request::new(request), path, codec)
            .await
            .map(|r| r.into_inner())
    }

    async fn metrics(&self) -> String {
        let url = format!("http://{}:15014/metrics", self.ip);
        match self.http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => panic!("{url}: {e}"),
        }
    }
}

fn headers(pairs: &[(&str, &str)]) -> Value {
    Value::StringMap(Arc::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
}

fn request(bag: &Bag) -> CheckRequest {
    CheckRequest {
        attributes: Some(encode(bag)),
        global_word_count: dictionary::words().len() as u32,
        deduplication_id: String::new(),
        quotas: HashMap::new(),
    }
}

fn code(r: &CheckResponse) -> Code {
    Code::from_i32(
        r.precondition
            .as_ref()
            .and_then(|p| p.status.as_ref())
            .map_or(0, |s| s.code),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_denies_admits_and_names_what_it_read() {
    let policy = Policy::start(&[]).await;
    let mut bag = Bag::new();
    bag.set("source.name", Value::string("productpage"));
    bag.set("request.headers", headers(&[("x-user", "blocked")]));
    let denied = policy.check(request(&bag)).await.expect("check");
    assert_eq!(code(&denied), Code::PermissionDenied);
    let status = denied
        .precondition
        .as_ref()
        .and_then(|p| p.status.clone())
        .unwrap_or_default();
    assert_eq!(status.message, "denyall.handler.istio-system:Not allowed");

    bag.set("request.headers", headers(&[("x-user", "jason")]));
    let ok = policy.check(request(&bag)).await.expect("check");
    assert_eq!(code(&ok), Code::Ok);
    let pre = ok.precondition.expect("precondition");
    // The answer depended on the x-user header (present) and nothing about
    // the request's other headers: a proxy can cache it on that key alone.
    let referenced = pre.referenced_attributes.expect("referenced");
    let headers_index = dictionary::index_of("request.headers").expect("global word");
    let word = |i: i32| {
        if i >= 0 {
            dictionary::words()[i as usize].to_string()
        } else {
            referenced.words[(-i - 1) as usize].clone()
        }
    };
    let header_match = referenced
        .attribute_matches
        .iter()
        .find(|m| m.name == headers_index)
        .expect("request.headers is referenced");
    assert_eq!(word(header_match.map_key), "x-user");
    assert_eq!(header_match.condition, Condition::Exact as i32);
    let ops = pre
        .route_directive
        .expect("route directive")
        .request_header_operations;
    assert_eq!(ops.len(), 1);
    assert_eq!(
        (ops[0].name.as_str(), ops[0].value.as_str()),
        ("x-checked-by", "mixer-policy")
    );

    // Asked again: answered from the check cache.
    policy.check(request(&bag)).await.expect("check");
    assert!(
        policy
            .metrics()
            .await
            .contains("mixer_check_cache_hits_total 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_by_name_are_granted_then_exhausted() {
    let policy = Policy::start(&[]).await;
    let mut bag = Bag::new();
    bag.set("source.name", Value::string("productpage"));
    let mut req = request(&bag);
    // Keyed by the instance's short name, in any case, as Istio's proxy sends it.
    req.quotas.insert(
        "RequestCount".into(),
        QuotaParams {
            amount: 1,
            best_effort: false,
        },
    );
    let mut granted = Vec::new();
    for i in 0..3 {
        req.deduplication_id = format!("req-{i}");
        let r = policy.check(req.clone()).await.expect("check");
        granted.push(r.quotas["RequestCount"].granted_amount);
    }
    assert_eq!(granted, [1, 1, 0]);
    // A retry of an admitted request is not charged again.
    req.deduplication_id = "req-0".into();
    let r = policy.check(req.clone()).await.expect("check");
    assert_eq!(r.quotas["RequestCount"].granted_amount, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_attributes_are_invalid_arguments() {
    let policy = Policy::start(&[]).await;
    let mut attrs = CompressedAttributes::default();
    attrs.strings.insert(9999, 0);
    let mut req = request(&Bag::new());
    req.attributes = Some(attrs);
    let e = policy.check(req.clone()).await.expect_err("bad index");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("word index 9999 is out of range"),
        "{}",
        e.message()
    );

    let mut attrs = CompressedAttributes {
        words: vec!["x".into()],
        ..Default::default()
    };
    attrs.strings.insert(-7, -1);
    req.attributes = Some(attrs);
    let e = policy
        .check(req.clone())
        .await
        .expect_err("bad local index");
    assert!(e.message().contains("word index -7"), "{}", e.message());

    let size = dictionary::index_of("request.size").expect("global word");
    let mut attrs = CompressedAttributes {
        words: vec!["big".into()],
        ..Default::default()
    };
    attrs.strings.insert(size, -1);
    req.attributes = Some(attrs);
    let e = policy.check(req.clone()).await.expect_err("wrong type");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("`request.size` is declared INT64"),
        "{}",
        e.message()
    );

    req.attributes = Some(CompressedAttributes::default());
    req.global_word_count = 10_000;
    let e = policy
        .check(req.clone())
        .await
        .expect_err("dictionary too large");
    assert!(
        e.message().contains("global_word_count 10000"),
        "{}",
        e.message()
    );

    // Broken framing inside the attribute set: a word announced longer than
    // what is left of the message.
    let broken = api::mixer_wire::CheckRequest {
        attributes: vec![0x0a, 5, b'a'].into(),
        ..Default::default()
    };
    let e = policy.check_raw(broken).await.expect_err("broken framing");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("not valid protobuf: field 1: 5 bytes announced, 1 left"),
        "{}",
        e.message()
    );
    // The server goes on answering.
    policy
        .check(request(&Bag::new()))
        .await
        .expect("check after a broken one");

    // An attribute no manifest declares is ignored, and counted.
    let mut attrs = CompressedAttributes {
        words: vec!["istio.private.attribute".into(), "v".into()],
        ..Default::default()
    };
    attrs.strings.insert(-1, -2);
    req.attributes = Some(attrs);
    req.global_word_count = 0;
    let r = policy.check(req).await.expect("undeclared is fine");
    assert_eq!(code(&r), Code::Ok);
    assert!(
        policy
            .metrics()
            .await
            .contains("mixer_undeclared_attributes_total 1")
    );

    // The server is still up and answering.
    assert!(policy.check(request(&Bag::new())).await.is_ok());
    let report = policy.client.clone().report(ReportRequest::default()).await;
    assert_eq!(report.expect_err("report").code(), Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_process_adapter_answers_a_listentry_check() {
    let policy = Policy::start(&[]).await;
    let mut bag = Bag::new();
    bag.set("destination.service.name", Value::string("ratings"));
    bag.set("source.name", Value::string("reviews"));
    let r = policy.check(request(&bag)).await.expect("check");
    assert_eq!(code(&r), Code::Ok);
    bag.set("source.name", Value::string("details"));
    let r = policy.check(request(&bag)).await.expect("check");
    assert_eq!(code(&r), Code::NotFound);
    let message = r
        .precondition
        .and_then(|p| p.status)
        .unwrap_or_default()
        .message;
    assert!(
        message.contains("details is not listed by the out-of-process adapter"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_object_is_rejected_alone() {
    let bad = r#"
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: broken, namespace: istio-system}
spec:
  match: request.headerz["x"] == "y"
  actions:
  - {handler: denyall, instances: [denyrequest]}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: typo, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    valeu: source.name
"#;
    let policy = Policy::start(&[("bad.yaml", bad)]).await;
    let url = format!("http://{}:15014/debug/configz", policy.ip);
    let configz: serde_json::Value = policy
        .http
        .get(&url)
        .send()
        .await
        .expect("configz")
        .json()
        .await
        .expect("json");
    let errors = configz["errors"].to_string();
    assert!(errors.contains("rule broken.rule.istio-system"), "{errors}");
    assert!(errors.contains("spec.match"), "{errors}");
    assert!(errors.contains("request.headerz"), "{errors}");
    assert!(
        errors.contains("instance typo.instance.istio-system"),
        "{errors}"
    );
    assert!(errors.contains("spec.params.valeu"), "{errors}");
    // The rest of the config works.
    let mut bag = Bag::new();
    bag.set("request.headers", headers(&[("x-user", "blocked")]));
    let r = policy.check(request(&bag)).await.expect("check");
    assert_eq!(code(&r), Code::PermissionDenied);
}

/// Envoy's ext_authz contract on the same port: attributes from the peers,
/// the request and `context_extensions`; a denial carries its HTTP status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_maps_envoy_requests_and_denials() {
    use envoy_types::ext_authz::v3::pb::{CheckRequest as AuthzRequest, HttpResponse};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

    let anonymous = r#"
apiVersion: config.istio.io/v1alpha2
kind: denier
metadata: {name: anonymous, namespace: istio-system}
spec:
  status: {code: 16, message: who are you}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: anonymous, namespace: istio-system}
spec:
  match: request.headers["x-user"] == "anonymous"
  actions:
  - {handler: anonymous.denier, instances: [denyrequest]}
"#;
    let policy = Policy::start(&[("anonymous.yaml", anonymous)]).await;
    let mut client = AuthorizationClient::connect(format!("http://{}:9091", policy.ip))
        .await
        .expect("connect");
    let ask = |user: &str, service: &str| AuthzRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/".into(),
                    headers: [("x-user".to_string(), user.to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [
                ("destination.service.name".to_string(), service.to_string()),
                ("not.an.attribute".to_string(), "ignored".to_string()),
            ]
            .into(),
            ..Default::default()
        }),
    };
    let denied = client
        .check(ask("blocked", "reviews"))
        .await
        .expect("check")
        .into_inner();
    match denied.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_eq!(d.status.map(|s| s.code), Some(403));
            assert!(d.body.contains("Not allowed"), "{}", d.body);
        }
        other => panic!("expected a denial: {other:?}"),
    }
    let ok = client
        .check(ask("jason", "reviews"))
        .await
        .expect("check")
        .into_inner();
    match ok.http_response {
        Some(HttpResponse::OkResponse(r)) => {
            let added: Vec<_> = r
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.as_str(), h.value.as_str()))
                .collect();
            assert_eq!(added, [("x-checked-by", "mixer-policy")]);
        }
        other => panic!("expected OK: {other:?}"),
    }
    let denial = |r: envoy_types::ext_authz::v3::pb::CheckResponse| match r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => (d.status.map_or(0, |s| s.code), d.body),
        other => panic!("expected a denial: {other:?}"),
    };
    // The out-of-process adapter's rule matches on a context extension.
    let refused = client.check(ask("jason", "ratings")).await.expect("check");
    assert_eq!(denial(refused.into_inner()).0, 403);
    // UNAUTHENTICATED is 401.
    let refused = client
        .check(ask("anonymous", "reviews"))
        .await
        .expect("check");
    assert_eq!(
        denial(refused.into_inner()),
        (401, "anonymous.denier.istio-system:who are you".into())
    );
    // A context extension that is not of its attribute's type is refused by name.
    let mut bad = ask("jason", "reviews");
    if let Some(a) = bad.attributes.as_mut() {
        a.context_extensions
            .insert("destination.port".into(), "http".into());
    }
    let (status, body) = denial(client.check(bad).await.expect("check").into_inner());
    assert_eq!(status, 403);
    assert!(
        body.contains("context_extensions[destination.port]"),
        "{body}"
    );
    // A request time no clock can hold is refused, and the server stays up.
    let mut bad = ask("jason", "reviews");
    if let Some(r) = bad.attributes.as_mut().and_then(|a| a.request.as_mut()) {
        r.time = Some(envoy_types::pb::google::protobuf::Timestamp {
            seconds: i64::MAX,
            nanos: 1_000_000_000,
        });
    }
    let (_, body) = denial(client.check(bad).await.expect("check").into_inner());
    assert!(body.contains("request.time"), "{body}");
    assert!(client.check(ask("jason", "reviews")).await.is_ok());
    // `not.an.attribute` was ignored, and counted.
    let metrics = policy.metrics().await;
    let undeclared = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mixer_undeclared_attributes_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(undeclared.is_some_and(|n| n > 0), "{metrics}");
}
