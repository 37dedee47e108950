//! kubernetesenv's Pods from the Kubernetes API server, against a scripted
//! API server (none can run here) answering with recorded Pods.

#[allow(dead_code)]
#[path = "../../citadel/tests/kubernetes/fake.rs"]
mod fake;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fake::{FakeApi, Reply, WAIT, send_event, status};
use http::StatusCode;
use mixer::adapter::kubernetesenv::{PodEntry, PodIndex, kube};
use mixer::attribute::Value;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

/// The Pods recorded for Pilot's Kubernetes registry tests.
fn recorded_pods() -> Json {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pilot/tests/fixtures/kubernetes/pods.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture json")
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// Waits until the index holds what `done` wants.
async fn until(index: &PodIndex, what: &str, done: impl Fn(&PodIndex) -> bool) {
    tokio::time::timeout(WAIT, async {
        while !done(index) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn at(index: &PodIndex, addr: &str) -> Option<Arc<PodEntry>> {
    index.get().find(None, ip(addr)).cloned()
}

fn label(p: &PodEntry, key: &str) -> Option<String> {
    match &p.labels {
        Value::StringMap(m) => m.get(key).cloned(),
        _ => None,
    }
}

fn pod(name: &str, addr: &str, version: &str) -> Json {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "shop", "resourceVersion": "2101",
            "labels": {"app": "cart", "version": version, "pod-template-hash": "6f7d8c9b5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "cart-6f7d8c9b5", "uid": "0d0e0f00-1111-4222-8333-444455556666",
                "controller": true}],
        },
        "spec": {"serviceAccountName": "cart", "containers": [{"name": "cart", "image": "cart:1"}]},
        "status": {"podIP": addr, "hostIP": "172.18.0.4"},
    })
}

#[tokio::test]
async fn pods_are_listed_then_followed_across_every_namespace() {
    let (client, api) = FakeApi::start(|seen| {
        if seen.is_watch() {
            Reply::Watch
        } else {
            Reply::Json(StatusCode::OK, recorded_pods())
        }
    });
    let index = PodIndex::default();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(kube::watch(client, index.clone(), shutdown.clone()));

    until(&index, "the listed Pods", |i| i.get().len() == 3).await;
    let reviews = at(&index, "10.244.1.7").expect("reviews-v1 by its IP");
    assert_eq!(reviews.workload_name, Value::string("reviews-v1"));
    assert_eq!(
        reviews.owner,
        Value::string("kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1")
    );
    assert_eq!(reviews.service_account, Value::string("bookinfo-reviews"));
    assert_eq!(reviews.container, Some(Value::string("reviews")));
    assert!(
        index
            .get()
            .find(
                Some("kubernetes://ratings-v1-8d7c6b5a4-t5y6u.default"),
                None
            )
            .is_some()
    );
    let list = &api.seen()[0];
    assert_eq!(list.path, "/api/v1/pods", "Pods of every namespace");

    let events = api.watch_of("pods").await;
    send_event(
        &events,
        "ADDED",
        &pod("cart-6f7d8c9b5-abcde", "10.244.3.2", "v1"),
    );
    until(&index, "the added Pod", |i| at(i, "10.244.3.2").is_some()).await;
    let cart = at(&index, "10.244.3.2").unwrap();
    assert_eq!(cart.workload_name, Value::string("cart"));
    assert_eq!(cart.namespace, Value::string("shop"));

    send_event(
        &events,
        "MODIFIED",
        &pod("cart-6f7d8c9b5-abcde", "10.244.3.2", "v2"),
    );
    until(&index, "the modified Pod", |i| {
        at(i, "10.244.3.2").is_some_and(|p| label(&p, "version").as_deref() == Some("v2"))
    })
    .await;

    send_event(
        &events,
        "DELETED",
        &pod("cart-6f7d8c9b5-abcde", "10.244.3.2", "v2"),
    );
    until(&index, "the deleted Pod gone", |i| {
        at(i, "10.244.3.2").is_none() && i.get().len() == 3
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the watcher ends on shutdown")
        .unwrap();
}

#[tokio::test]
async fn a_failing_listing_is_retried() {
    let lists = Arc::new(AtomicUsize::new(0));
    let counted = lists.clone();
    let (client, _api) = FakeApi::start(move |seen| {
        if seen.is_watch() {
            return Reply::Watch;
        }
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::Json(
                StatusCode::INTERNAL_SERVER_ERROR,
                status(500, "InternalError", "etcdserver: request timed out"),
            );
        }
        Reply::Json(StatusCode::OK, recorded_pods())
    });
    let index = PodIndex::default();
    let shutdown = CancellationToken::new();
    tokio::spawn(kube::watch(client, index.clone(), shutdown.clone()));
    until(&index, "the Pods after a retried listing", |i| {
        i.get().len() == 3
    })
    .await;
    assert!(
        lists.load(Ordering::SeqCst) >= 2,
        "the failed LIST was retried"
    );
    shutdown.cancel();
}
