//! `watch_accounts` over recorded ServiceAccounts and Namespaces.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use citadel::identity::Identity;
use citadel::secrets::Accounts;
use citadel::secrets::kube::watch_accounts;
use http::StatusCode;
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fake::{FakeApi, Reply, Seen, WAIT, fixture, send_event, status};

/// The cluster of the fixtures: LISTs from the recorded objects, WATCHes
/// held open. The Namespace LIST can be held back, or fail once.
fn cluster(
    mut gate: Option<oneshot::Receiver<()>>,
    mut fail_namespaces: bool,
) -> impl FnMut(&Seen) -> Reply {
    move |req| {
        if req.is_watch() {
            return Reply::Watch;
        }
        match req.path.as_str() {
            "/api/v1/serviceaccounts" => {
                Reply::Json(StatusCode::OK, fixture("serviceaccounts.json"))
            }
            "/api/v1/namespaces" if fail_namespaces => {
                fail_namespaces = false;
                let body = status(500, "InternalError", "etcdserver: request timed out");
                Reply::Json(StatusCode::INTERNAL_SERVER_ERROR, body)
            }
            "/api/v1/namespaces" => match gate.take() {
                Some(gate) => Reply::Gated(gate, StatusCode::OK, fixture("namespaces.json")),
                None => Reply::Json(StatusCode::OK, fixture("namespaces.json")),
            },
            other => Reply::Json(
                StatusCode::NOT_FOUND,
                status(
                    404,
                    "NotFound",
                    &format!("the server could not find {other}"),
                ),
            ),
        }
    }
}

struct Watching {
    api: FakeApi,
    accounts: watch::Receiver<Arc<Accounts>>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Watching {
    fn start(respond: impl FnMut(&Seen) -> Reply + Send + 'static) -> Watching {
        let (client, api) = FakeApi::start(respond);
        let (tx, accounts) = watch::channel(Arc::new(Accounts::default()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(watch_accounts(client, tx, shutdown.clone()));
        Watching {
            api,
            accounts,
            shutdown,
            task,
        }
    }

    async fn snapshot(&mut self, what: &str, f: impl Fn(&Accounts) -> bool) -> Arc<Accounts> {
        let accounts = tokio::time::timeout(WAIT, self.accounts.wait_for(|a| f(a)))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("watch_accounts running");
        accounts.clone()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("watch_accounts returns on shutdown")
            .expect("watch_accounts did not panic")
            .expect("watch_accounts ends without error");
    }
}

fn listed_identities() -> BTreeSet<Identity> {
    [
        ("default", "bookinfo-details"),
        ("default", "bookinfo-productpage"),
        ("default", "bookinfo-ratings"),
        ("default", "bookinfo-reviews"),
        ("default", "default"),
        ("istio-system", "istio-citadel-service-account"),
        ("istio-system", "default"),
        ("kube-system", "default"),
        ("legacy-billing", "default"),
        ("legacy-billing", "invoicer"),
    ]
    .into_iter()
    .map(|(ns, sa)| Identity::new(ns, sa))
    .collect()
}

#[tokio::test]
async fn accounts_are_published_only_once_both_lists_complete() {
    let (release, gate) = oneshot::channel();
    let mut w = Watching::start(cluster(Some(gate), false));

    // ServiceAccounts are listed and watched while the Namespace LIST hangs.
    w.api.watch_of("serviceaccounts").await;
    let lists: Vec<String> = w
        .api
        .seen()
        .iter()
        .filter(|s| !s.is_watch())
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(lists, ["/api/v1/serviceaccounts", "/api/v1/namespaces"]);
    let early = tokio::time::timeout(Duration::from_millis(300), w.accounts.changed()).await;
    assert!(
        early.is_err(),
        "a snapshot was published before Namespaces listed"
    );

    release.send(()).expect("namespace LIST waiting");
    tokio::time::timeout(WAIT, w.accounts.changed())
        .await
        .expect("a snapshot once both lists complete")
        .expect("watch_accounts running");
    let accounts = w.accounts.borrow_and_update().clone();
    assert_eq!(accounts.service_accounts, listed_identities());
    assert_eq!(
        accounts
            .namespaces
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["default", "istio-system", "kube-system", "legacy-billing"]
    );
    assert_eq!(accounts.namespaces["default"]["istio-injection"], "enabled");
    assert_eq!(
        accounts.namespaces["legacy-billing"]["ca.istio.io/override"],
        "false"
    );
    assert!(!accounts.managed("legacy-billing", "istio-system", true));
    assert!(accounts.managed("default", "istio-system", true));
    w.stop().await;
}

#[tokio::test]
async fn watch_events_each_publish_the_change() {
    let mut w = Watching::start(cluster(None, false));
    w.snapshot("the listed cluster", |a| {
        a.service_accounts == listed_identities()
    })
    .await;
    let service_accounts = w.api.watch_of("serviceaccounts").await;
    let namespaces = w.api.watch_of("namespaces").await;

    // Bookinfo's ratings v2 arrives with its own ServiceAccount.
    let added = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {
            "creationTimestamp": "2026-11-20T11:40:07Z", "labels": {"account": "ratings-v2"},
            "name": "bookinfo-ratings-v2", "namespace": "default",
            "resourceVersion": "53120", "uid": "7d3f1b9e-6a2c-4e05-b8d7-0c9e4a2f1b63"
        }
    });
    send_event(&service_accounts, "ADDED", &added);
    let ratings_v2 = Identity::new("default", "bookinfo-ratings-v2");
    let accounts = w
        .snapshot("bookinfo-ratings-v2 added", |a| {
            a.service_accounts.contains(&ratings_v2)
        })
        .await;
    let mut expected = listed_identities();
    expected.insert(ratings_v2.clone());
    assert_eq!(accounts.service_accounts, expected);

    // And details goes away.
    let mut deleted = fixture("serviceaccounts.json")["items"][0].clone();
    deleted["metadata"]["resourceVersion"] = json!("53131");
    send_event(&service_accounts, "DELETED", &deleted);
    let details = Identity::new("default", "bookinfo-details");
    let accounts = w
        .snapshot("bookinfo-details deleted", |a| {
            !a.service_accounts.contains(&details)
        })
        .await;
    expected.remove(&details);
    assert_eq!(accounts.service_accounts, expected);

    // The billing team opts its namespace back in.
    let mut billing = fixture("namespaces.json")["items"][3].clone();
    billing["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("ca.istio.io/override");
    billing["metadata"]["resourceVersion"] = json!("53140");
    send_event(&namespaces, "MODIFIED", &billing);
    let accounts = w
        .snapshot("legacy-billing relabelled", |a| {
            a.managed("legacy-billing", "istio-system", true)
        })
        .await;
    assert_eq!(accounts.service_accounts, expected);
    assert_eq!(
        accounts.namespaces["legacy-billing"]
            .keys()
            .collect::<Vec<_>>(),
        ["kubernetes.io/metadata.name"]
    );
    w.stop().await;
}

#[tokio::test]
async fn a_failing_list_is_retried() {
    let mut w = Watching::start(cluster(None, true));
    let accounts = w
        .snapshot("a snapshot after a 500", |a| !a.namespaces.is_empty())
        .await;
    assert_eq!(accounts.namespaces.len(), 4);
    assert_eq!(accounts.service_accounts, listed_identities());
    let namespace_lists = w
        .api
        .seen()
        .iter()
        .filter(|s| s.path == "/api/v1/namespaces" && !s.is_watch())
        .count();
    assert_eq!(namespace_lists, 2, "the failed LIST is retried once");
    w.stop().await;
}
