//! Galley's Kubernetes side against a scripted API server (none can run
//! here) answering with recorded objects: the CRD watchers as a config
//! source, and the webhook configuration Galley registers.

#[allow(dead_code)]
#[path = "../../citadel/tests/kubernetes/fake.rs"]
mod fake;

use std::sync::Arc;

use fake::{FakeApi, Reply, WAIT, fixture, send_event, status};
use galley::snapshot::Snapshot;
use galley::source::kube::KubeSource;
use http::{Method, StatusCode};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const VIRTUAL_SERVICES: &str = "istio/networking/v1alpha3/virtualservices";

/// LISTs answer from the fixtures (an empty list where there is none; the
/// EnvoyFilter CRD is not installed), WATCHes stay open for the test.
fn cluster(seen: &fake::Seen) -> Reply {
    let resource = seen.path.rsplit('/').next().unwrap_or_default();
    if seen.is_watch() {
        return Reply::Watch;
    }
    if resource == "envoyfilters" {
        return Reply::Json(
            StatusCode::NOT_FOUND,
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubernetes")
        .join(format!("{resource}.json"));
    if path.exists() {
        return Reply::Json(StatusCode::OK, fixture(&format!("{resource}.json")));
    }
    Reply::Json(
        StatusCode::OK,
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "48213"}, "items": []}),
    )
}

async fn next_where(
    rx: &mut watch::Receiver<Arc<Snapshot>>,
    what: &str,
    done: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let found = tokio::time::timeout(WAIT, rx.wait_for(|s| done(s)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("source running");
    found.clone()
}

#[tokio::test]
async fn the_crds_are_served_once_listed_and_followed_after() {
    let (client, api) = FakeApi::start(cluster);
    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    let (synced_tx, mut synced) = watch::channel(false);
    let shutdown = CancellationToken::new();
    tokio::spawn(KubeSource::new(client).watch(tx, synced_tx, shutdown.clone()));
    tokio::time::timeout(WAIT, synced.wait_for(|s| *s))
        .await
        .expect("synced once every CRD is listed")
        .expect("running");

    let s = rx.borrow_and_update().clone();
    assert!(s.get(VIRTUAL_SERVICES, "default/reviews").is_some());
    assert!(
        s.get(
            "istio/networking/v1alpha3/destinationrules",
            "default/reviews"
        )
        .is_some()
    );
    // Mixer's kinds, checked together: the rule's handler and instance exist.
    assert!(
        s.get("istio/policy/v1beta1/rules", "istio-system/promhttp")
            .is_some(),
        "{:#?}",
        s.errors
    );
    assert!(
        s.get(
            "istio/config/v1alpha2/legacy/metrics",
            "istio-system/requestcount"
        )
        .is_some()
    );
    // The invalid object is not served, and its error names it.
    assert!(s.get(VIRTUAL_SERVICES, "bookinfo/ratings-broken").is_none());
    let errors: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "VirtualService bookinfo/ratings-broken: spec.http[0].route: weights add up to 50, not 100"
        ]
    );
    // The recorded metadata travels with the resource.
    let entry = s.get(VIRTUAL_SERVICES, "default/reviews").unwrap();
    assert!(
        entry
            .resource
            .annotations
            .contains_key("kubectl.kubernetes.io/last-applied-configuration")
    );

    // Changes arrive over the WATCH.
    let vs = api.watch_of("virtualservices").await;
    let mut ratings = fixture("virtualservices.json")["items"][1].clone();
    ratings["spec"]["http"][0]["route"][0]["weight"] = json!(100);
    ratings["metadata"]["resourceVersion"] = json!("48300");
    send_event(&vs, "MODIFIED", &ratings);
    let s = next_where(&mut rx, "the mended VirtualService", |s| {
        s.get(VIRTUAL_SERVICES, "bookinfo/ratings-broken").is_some()
    })
    .await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let reviews = fixture("virtualservices.json")["items"][0].clone();
    send_event(&vs, "DELETED", &reviews);
    next_where(&mut rx, "the deleted VirtualService gone", |s| {
        s.get(VIRTUAL_SERVICES, "default/reviews").is_none()
    })
    .await;

    // Every CRD was listed with Istio's group, version and plural.
    let seen = api.seen();
    for path in [
        "/apis/networking.istio.io/v1alpha3/virtualservices",
        "/apis/config.istio.io/v1alpha2/rules",
        "/apis/config.istio.io/v1alpha2/deniers",
        "/apis/rbac.istio.io/v1alpha1/clusterrbacconfigs",
        "/apis/authentication.istio.io/v1alpha1/meshpolicies",
        "/apis/security.istio.io/v1beta1/authorizationpolicies",
    ] {
        assert!(
            seen.iter().any(|r| r.path == path && !r.is_watch()),
            "no LIST of {path}"
        );
    }
    shutdown.cancel();
}

#[tokio::test]
async fn the_webhook_configuration_is_registered_with_its_ca_and_owner() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/galley/validatingwebhookconfiguration.yaml"),
    )
    .expect("shipped configuration");
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        name: "istio-system".into(),
        uid: "2b9d3c44-0afe-11ea-9a9f-42010a800122".into(),
        ..Default::default()
    };
    // Without the CA, nothing is enforced yet.
    let unsure = galley::registration::render(&text, None, None).expect("renders");
    for w in unsure.webhooks.as_deref().unwrap_or_default() {
        assert_eq!(w.failure_policy.as_deref(), Some("Ignore"), "{}", w.name);
        assert!(w.client_config.ca_bundle.is_none());
    }
    let ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let config = galley::registration::render(&text, Some(ca), Some(owner)).expect("renders");
    let (client, api) = FakeApi::start(|_| {
        Reply::Json(
            StatusCode::OK,
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "istio-galley", "resourceVersion": "9"},
            }),
        )
    });
    galley::registration::apply(&client, &config)
        .await
        .expect("applied");
    let seen = api.seen();
    let patch = seen
        .iter()
        .find(|r| r.method == Method::PATCH)
        .expect("a PATCH");
    assert_eq!(
        patch.path,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/istio-galley"
    );
    assert_eq!(patch.param("fieldManager").as_deref(), Some("galley"));
    assert_eq!(patch.param("force").as_deref(), Some("true"));
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    let webhooks = patch.body["webhooks"].as_array().expect("webhooks");
    assert_eq!(webhooks.len(), 2);
    for w in webhooks {
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(
            w["clientConfig"]["caBundle"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
        );
    }
    assert_eq!(
        patch.body["metadata"]["ownerReferences"][0]["kind"],
        "Namespace"
    );
    assert_eq!(
        patch.body["metadata"]["ownerReferences"][0]["uid"],
        "2b9d3c44-0afe-11ea-9a9f-42010a800122"
    );
}

#[test]
fn a_broken_webhook_configuration_is_refused_with_the_field() {
    let e = galley::registration::render("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: x}\nwebhooks:\n- name: a\n  clientConfig: {}\n  sideEffects: None\n  admissionReviewVersions: [v1]\n  timeoutSeconds: ten\n", None, None).unwrap_err();
    assert!(e.starts_with("webhooks[0].timeoutSeconds"), "{e}");
}
