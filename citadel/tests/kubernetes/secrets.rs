//! `KubeStore` against a model of the API server's Secrets.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use citadel::secrets::kube::KubeStore;
use citadel::secrets::{CA_ROOT, KEY_AND_CERT, SERVICE_ACCOUNT_ANNOTATION, Secret, SecretStore};
use http::Method;
use serde_json::json;

use crate::fake::{FakeApi, status};
use crate::secrets_api::SecretsApi;

fn kube_store(api: SecretsApi) -> (KubeStore, FakeApi) {
    let (client, fake) = FakeApi::start(api.respond());
    (KubeStore::new(client), fake)
}

fn productpage_secret() -> Secret {
    Secret {
        namespace: "default".into(),
        name: "istio.bookinfo-productpage".into(),
        kind: KEY_AND_CERT.into(),
        annotations: [(
            SERVICE_ACCOUNT_ANNOTATION.to_string(),
            "bookinfo-productpage".to_string(),
        )]
        .into(),
        data: [
            (
                "cert-chain.pem".to_string(),
                b"-----BEGIN CERTIFICATE-----\nMIIB\n".to_vec(),
            ),
            (
                "key.pem".to_string(),
                vec![0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0xff],
            ),
            (
                "root-cert.pem".to_string(),
                b"-----BEGIN CERTIFICATE-----\nMIIC\n".to_vec(),
            ),
        ]
        .into(),
    }
}

#[tokio::test]
async fn get_reads_a_secret_and_a_missing_one_is_none() {
    let (store, api) = kube_store(SecretsApi::seeded());
    let ratings = store
        .get("default", "istio.bookinfo-ratings")
        .await
        .unwrap()
        .expect("istio.bookinfo-ratings exists");
    assert_eq!(ratings.kind, KEY_AND_CERT);
    assert_eq!(
        ratings.annotations[SERVICE_ACCOUNT_ANNOTATION],
        "bookinfo-ratings"
    );
    assert_eq!(
        ratings.data.keys().map(String::as_str).collect::<Vec<_>>(),
        ["cert-chain.pem", "key.pem", "root-cert.pem"]
    );
    assert!(ratings.data["key.pem"].starts_with(b"-----BEGIN EC PRIVATE KEY-----\n"));

    assert_eq!(
        store
            .get("default", "istio.bookinfo-mongodb")
            .await
            .unwrap(),
        None
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].method, Method::GET);
    assert_eq!(
        seen[1].path,
        "/api/v1/namespaces/default/secrets/istio.bookinfo-mongodb"
    );
}

#[tokio::test]
async fn put_creates_a_secret() {
    let (store, api) = kube_store(SecretsApi::empty());
    let secret = productpage_secret();
    store.put(&secret).await.unwrap();

    let seen = api.seen();
    assert_eq!(seen.len(), 1, "one round trip");
    let apply = &seen[0];
    assert_eq!(apply.method, Method::PATCH);
    assert_eq!(
        apply.path,
        "/api/v1/namespaces/default/secrets/istio.bookinfo-productpage"
    );
    assert_eq!(apply.content_type, "application/apply-patch+yaml");
    assert_eq!(apply.param("fieldManager").as_deref(), Some("citadel"));
    assert_eq!(apply.param("force").as_deref(), Some("true"));
    let body = &apply.body;
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["kind"], "Secret");
    assert_eq!(body["metadata"]["name"], "istio.bookinfo-productpage");
    assert_eq!(body["metadata"]["namespace"], "default");
    assert_eq!(body["type"], "istio.io/key-and-cert");
    assert_eq!(
        body["metadata"]["annotations"],
        json!({"istio.io/service-account.name": "bookinfo-productpage"})
    );
    for (key, value) in &secret.data {
        assert_eq!(body["data"][key], STANDARD.encode(value), "data[{key}]");
    }
    assert_eq!(body["data"].as_object().unwrap().len(), 3);

    let stored = store
        .get("default", "istio.bookinfo-productpage")
        .await
        .unwrap();
    assert_eq!(stored, Some(secret));
}

#[tokio::test]
async fn put_updates_an_existing_secret() {
    let (store, api) = kube_store(SecretsApi::seeded());
    let before = store
        .get("default", "istio.bookinfo-ratings")
        .await
        .unwrap()
        .unwrap();
    let mut rotated = before.clone();
    rotated.data.insert(
        "cert-chain.pem".into(),
        b"-----BEGIN CERTIFICATE-----\nrotated\n".to_vec(),
    );
    store.put(&rotated).await.unwrap();

    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].method, Method::PATCH);
    assert_eq!(
        seen[1].path,
        "/api/v1/namespaces/default/secrets/istio.bookinfo-ratings"
    );
    assert_eq!(
        seen[1].body["data"]["cert-chain.pem"],
        STANDARD.encode(b"-----BEGIN CERTIFICATE-----\nrotated\n")
    );
    assert_eq!(
        seen[1].body["data"]["key.pem"],
        STANDARD.encode(&before.data["key.pem"])
    );
    let after = store
        .get("default", "istio.bookinfo-ratings")
        .await
        .unwrap();
    assert_eq!(after, Some(rotated));
}

#[tokio::test]
async fn list_selects_by_type_in_every_namespace() {
    let (store, api) = kube_store(SecretsApi::seeded());
    let secrets = store.list(KEY_AND_CERT).await.unwrap();
    let names: Vec<(&str, &str)> = secrets
        .iter()
        .map(|s| (s.namespace.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("default", "istio.bookinfo-ratings"),
            ("default", "istio.bookinfo-reviews"),
            ("default", "istio.default"),
            ("istio-system", "istio.default"),
        ]
    );
    assert!(secrets.iter().all(|s| s.kind == KEY_AND_CERT));
    assert_eq!(
        secrets[0].annotations[SERVICE_ACCOUNT_ANNOTATION],
        "bookinfo-ratings"
    );
    assert!(secrets[3].data["root-cert.pem"].starts_with(b"-----BEGIN CERTIFICATE-----\n"));

    // Four Secrets two to a page: the second request continues the first.
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.path, "/api/v1/secrets");
        assert_eq!(
            request.param("fieldSelector").as_deref(),
            Some("type=istio.io/key-and-cert")
        );
        assert_eq!(request.param("limit").as_deref(), Some("500"));
    }
    assert_eq!(seen[0].param("continue"), None);
    assert_eq!(seen[1].param("continue").as_deref(), Some("2"));

    let roots = store.list(CA_ROOT).await.unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(
        (roots[0].namespace.as_str(), roots[0].name.as_str()),
        ("istio-system", "istio-ca-secret")
    );
    assert_eq!(roots[0].data["cert-chain.pem"], b"");
}

#[tokio::test]
async fn delete_removes_and_a_missing_secret_is_no_error() {
    let (store, api) = kube_store(SecretsApi::seeded());
    store
        .delete("default", "istio.bookinfo-mongodb")
        .await
        .unwrap();
    store
        .delete("default", "istio.bookinfo-reviews")
        .await
        .unwrap();
    let seen = api.seen();
    assert_eq!(seen[0].method, Method::DELETE);
    assert_eq!(
        seen[0].path,
        "/api/v1/namespaces/default/secrets/istio.bookinfo-mongodb"
    );
    assert_eq!(
        seen[1].path,
        "/api/v1/namespaces/default/secrets/istio.bookinfo-reviews"
    );
    assert_eq!(
        store
            .get("default", "istio.bookinfo-reviews")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn api_failures_name_the_secret() {
    let timeout = status(500, "InternalError", "etcdserver: request timed out");
    let (store, _api) = kube_store(SecretsApi::failing(timeout));
    let e = store
        .get("default", "istio.bookinfo-ratings")
        .await
        .unwrap_err();
    assert_eq!(
        (e.namespace.as_str(), e.name.as_str()),
        ("default", "istio.bookinfo-ratings")
    );
    assert!(e.message.contains("etcdserver: request timed out"), "{e}");
    assert!(e.message.contains("500"), "{e}");
    assert!(
        e.to_string()
            .starts_with("Secret default/istio.bookinfo-ratings: "),
        "{e}"
    );
    let e = store.list(KEY_AND_CERT).await.unwrap_err();
    assert!(e.message.contains("istio.io/key-and-cert"), "{e}");
    assert!(e.message.contains("etcdserver: request timed out"), "{e}");

    let forbidden = status(
        403,
        "Forbidden",
        "secrets \"istio.invoicer\" is forbidden: User \"system:serviceaccount:istio-system:istio-citadel-service-account\" cannot patch resource \"secrets\" in API group \"\" in the namespace \"legacy-billing\"",
    );
    let (store, _api) = kube_store(SecretsApi::failing(forbidden));
    let mut invoicer = productpage_secret();
    invoicer.namespace = "legacy-billing".into();
    invoicer.name = "istio.invoicer".into();
    let e = store.put(&invoicer).await.unwrap_err();
    assert_eq!(
        (e.namespace.as_str(), e.name.as_str()),
        ("legacy-billing", "istio.invoicer")
    );
    assert!(
        e.message.contains("cannot patch resource \"secrets\""),
        "{e}"
    );
    assert!(e.message.contains("403"), "{e}");
    assert!(
        e.to_string()
            .starts_with("Secret legacy-billing/istio.invoicer: "),
        "{e}"
    );
    // Only a 404 is forgiven on delete.
    let e = store
        .delete("legacy-billing", "istio.invoicer")
        .await
        .unwrap_err();
    assert_eq!(e.name, "istio.invoicer");
}
