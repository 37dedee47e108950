//! Golden AdmissionReviews: each `golden/<case>.yaml` holds a Pod (and the
//! values it is injected with); the webhook's answer is decoded, its JSON
//! patch applied with the `json-patch` crate, and the result must parse
//! strictly as a Kubernetes Pod and equal `golden/<case>.injected.yaml`.
//! `UPDATE_GOLDENS=1` rewrites the expected files (read them before
//! committing).

use std::path::{Path, PathBuf};

use base64::Engine;
use injector::config::Config;
use injector::metrics::Metrics;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    values: Option<String>,
    #[serde(default = "v1")]
    api_version: String,
    namespace: String,
    pod: Value,
    /// `inject`, or the reason it is skipped as the metrics count it.
    expect: String,
}

fn v1() -> String {
    "admission.k8s.io/v1".into()
}

fn config(values: Option<&str>) -> Config {
    Config::from_texts(
        &(
            "built-in".into(),
            injector::config::DEFAULT_INJECT_CONFIG.into(),
        ),
        &("values".into(), values.unwrap_or_default().into()),
        &("mesh".into(), String::new()),
    )
    .unwrap()
}

fn review(config: &Config, case: &Case) -> Value {
    review_counted(config, &Metrics::new(), case)
}

fn review_counted(config: &Config, metrics: &Metrics, case: &Case) -> Value {
    let body = json!({
        "apiVersion": case.api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": case.namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": case.pod,
            "dryRun": false,
        },
    });
    injector::webhook::review(config, metrics, &serde_json::to_vec(&body).unwrap()).unwrap()
}

/// The Pod parses as Kubernetes' Pod with nothing left over.
fn strict_pod(pod: &Value) {
    let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    assert_eq!(
        &serde_json::to_value(&typed).unwrap(),
        pod,
        "fields Kubernetes does not know"
    );
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden_admission_reviews() {
    let update = std::env::var_os("UPDATE_GOLDENS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.to_string_lossy().ends_with(".yaml")
                && !p.to_string_lossy().ends_with(".injected.yaml")
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "golden cases: {cases:?}");
    for path in cases {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let case: Case = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        strict_pod(&case.pod);
        let config = config(case.values.as_deref());
        let metrics = Metrics::new();
        let answer = review_counted(&config, &metrics, &case);
        assert_eq!(answer["apiVersion"], case.api_version, "{name}");
        assert_eq!(answer["kind"], "AdmissionReview", "{name}");
        let response = &answer["response"];
        assert_eq!(
            response["uid"], "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
            "{name}"
        );
        assert_eq!(response["allowed"], true, "{name}: {response}");
        if case.expect != "inject" {
            assert!(
                response.get("patch").is_none(),
                "{name}: {} yet patched",
                case.expect
            );
            let counted = format!(
                "sidecar_injection_skip_total{{reason=\"{}\"}} 1",
                case.expect
            );
            assert!(
                metrics.registry.encode().contains(&counted),
                "{name}: not skipped as {}",
                case.expect
            );
            continue;
        }
        assert_eq!(response["patchType"], "JSONPatch", "{name}");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut pod = case.pod.clone();
        json_patch::patch(&mut pod, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
        strict_pod(&pod);

        // Admitting the injected Pod again changes nothing.
        let again = review(
            &config,
            &Case {
                pod: pod.clone(),
                ..case
            },
        );
        assert!(
            again["response"].get("patch").is_none(),
            "{name}: injected twice"
        );

        let expected_path = golden_dir().join(format!("{name}.injected.yaml"));
        let rendered = serde_yaml::to_string(&pod).unwrap();
        if update {
            std::fs::write(&expected_path, &rendered).unwrap();
            continue;
        }
        let expected: Value = serde_yaml::from_str(
            &std::fs::read_to_string(&expected_path)
                .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
        )
        .unwrap();
        assert_eq!(
            pod,
            expected,
            "{name}: differs from {}",
            expected_path.display()
        );
    }
}

#[test]
fn malformed_reviews_are_refused_with_a_reason() {
    let config = config(None);
    let metrics = Metrics::new();
    let cases: [(&[u8], &str); 6] = [
        (b"{", "AdmissionReview: "),
        (br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":"1"}}"#, "apiVersion: \"admission.k8s.io/v2\""),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{"uid":"1"}}"#, "kind: \"Pod\" is not AdmissionReview"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "request: missing"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#, "request.uid: empty"),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","object":[1]}}"#, "request.object: "),
    ];
    for (body, reason) in cases {
        let e = injector::webhook::review(&config, &metrics, body).unwrap_err();
        assert!(e.0.starts_with(reason), "{e} should start with {reason}");
    }
}

#[test]
fn a_pod_the_template_cannot_take_is_denied_with_the_field() {
    let config = config(None);
    let case = Case {
        values: None,
        api_version: v1(),
        namespace: "default".into(),
        pod: json!({"metadata": {"name": "web", "annotations": {"readiness.status.sidecar.istio.io/periodSeconds": "often"}},
                    "spec": {"containers": [{"name": "web", "image": "web"}]}}),
        expect: String::new(),
    };
    let answer = review(&config, &case);
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("injecting the sidecar into Pod default/web: injection template: "),
        "{message}"
    );
    assert!(message.contains("\"often\" is not an integer"), "{message}");

    for (annotation, value, reason) in [
        (
            "sidecar.istio.io/interceptionMode",
            "TPROXY",
            "\"TPROXY\": Trireme's sidecars capture with REDIRECT only",
        ),
        (
            "sidecar.istio.io/interceptionMode",
            "NONE",
            "\"NONE\": Trireme's sidecars capture with REDIRECT only",
        ),
        (
            "traffic.sidecar.istio.io/excludeInboundPorts",
            "15090,ssh",
            "\"ssh\" is not a port",
        ),
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.0.0.0/33",
            "\"10.0.0.0/33\" is not an IPv4 address or CIDR",
        ),
        (
            "status.sidecar.istio.io/port",
            "70000",
            "\"70000\" is not a port",
        ),
    ] {
        let case = Case {
            pod: json!({"metadata": {"name": "web", "annotations": {annotation: value}}, "spec": {"containers": [{"name": "web", "image": "web"}]}}),
            ..case.clone()
        };
        let message = review(&config, &case)["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            format!(
                "injecting the sidecar into Pod default/web: metadata.annotations[{annotation}]: {reason}"
            )
        );
    }
    let case = Case {
        pod: json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "istio-proxy", "image": "mine"}]}}),
        ..case
    };
    let message = review(&config, &case)["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.ends_with(
            "spec.containers: the Pod already has \"istio-proxy\", which injection adds"
        ),
        "{message}"
    );
}
