//! The Kubernetes API server as a source: one kube-rs watcher per Istio CRD,
//! each collection's objects kept as the API server last listed and
//! watched them. The first snapshot is published once every watcher has
//! listed its kind (or found the CRD missing), so sinks never see a
//! half-read cluster as the truth.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::mcp::{COLLECTIONS, Collection};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::Value as Json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::snapshot::Snapshot;
use crate::validate::{Checked, check_value};

pub struct KubeSource {
    client: kube::Client,
}

/// The CRD behind a collection: `istio/networking/v1alpha3/virtualservices`
/// is `virtualservices.networking.istio.io`, version v1alpha3.
pub fn api_resource(c: &Collection) -> ApiResource {
    let (group, version) = c.api_version.split_once('/').unwrap_or(("", c.api_version));
    let plural = c.name.rsplit('/').next().unwrap_or_default();
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: c.api_version.into(),
        kind: c.kind.into(),
        plural: plural.into(),
    }
}

enum Change {
    Listing(usize),
    Listed(usize, DynamicObject),
    ListDone(usize),
    Applied(usize, DynamicObject),
    Deleted(usize, DynamicObject),
    /// Listing or watching failed; `missing` when the CRD is not installed.
    Failed {
        kind: usize,
        missing: bool,
        why: String,
    },
}

#[derive(Default)]
struct Kind {
    synced: bool,
    objects: BTreeMap<String, Json>,
    listing: Option<BTreeMap<String, Json>>,
}

impl KubeSource {
    pub fn new(client: kube::Client) -> KubeSource {
        KubeSource { client }
    }

    pub async fn watch(
        self,
        out: watch::Sender<Arc<Snapshot>>,
        synced: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for (i, c) in COLLECTIONS.iter().enumerate() {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &api_resource(c));
            let tx = tx.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                // Backoff: a missing CRD must not turn into a hot loop of LISTs.
                let mut events = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .boxed();
                let mut reported = false;
                loop {
                    let event = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        e = events.next() => e,
                    };
                    if matches!(event, Some(Ok(_))) {
                        reported = false;
                    }
                    let change = match event {
                        None => return,
                        Some(Ok(watcher::Event::Init)) => Change::Listing(i),
                        Some(Ok(watcher::Event::InitApply(o))) => Change::Listed(i, o),
                        Some(Ok(watcher::Event::InitDone)) => Change::ListDone(i),
                        Some(Ok(watcher::Event::Apply(o))) => Change::Applied(i, o),
                        Some(Ok(watcher::Event::Delete(o))) => Change::Deleted(i, o),
                        Some(Err(e)) => {
                            // The watcher retries on its own; say it once
                            // per failure.
                            if reported {
                                continue;
                            }
                            reported = true;
                            Change::Failed {
                                kind: i,
                                missing: is_missing(&e),
                                why: e.to_string(),
                            }
                        }
                    };
                    if tx.send(change).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut kinds: Vec<Kind> = COLLECTIONS.iter().map(|_| Kind::default()).collect();
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                c = rx.recv() => match c { Some(c) => c, None => return Ok(()) },
            };
            apply(&mut kinds, first);
            // Coalesce a burst (a `kubectl apply` of many objects) into one
            // snapshot, but publish at least once a second under constant churn.
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                let quiet = (Instant::now() + Duration::from_millis(100)).min(deadline);
                match tokio::time::timeout_at(quiet, rx.recv()).await {
                    Ok(Some(c)) => apply(&mut kinds, c),
                    _ => break,
                }
            }
            if kinds.iter().all(|k| k.synced) {
                let previous = out.borrow().clone();
                let objects: Vec<Json> = kinds
                    .iter()
                    .flat_map(|k| k.objects.values().cloned())
                    .collect();
                let next = tokio::task::spawn_blocking(move || build(objects, &previous)).await?;
                super::publish(&out, next);
                synced.send_if_modified(|s| !std::mem::replace(s, true));
            }
        }
    }
}

fn is_missing(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404)
}

fn key(o: &DynamicObject) -> String {
    match o.namespace() {
        Some(ns) => format!("{ns}/{}", o.name_any()),
        None => o.name_any(),
    }
}

/// The object as YAML would have it; list items may come without their type.
fn document(i: usize, o: &DynamicObject) -> Json {
    let mut json = serde_json::to_value(o).unwrap_or_default();
    let c = &COLLECTIONS[i];
    json["apiVersion"] = Json::from(c.api_version);
    json["kind"] = Json::from(c.kind);
    json
}

fn apply(kinds: &mut [Kind], change: Change) {
    match change {
        Change::Listing(i) => kinds[i].listing = Some(BTreeMap::new()),
        Change::Listed(i, o) => {
            let doc = document(i, &o);
            kinds[i]
                .listing
                .get_or_insert_default()
                .insert(key(&o), doc);
        }
        Change::ListDone(i) => {
            let k = &mut kinds[i];
            k.objects = k.listing.take().unwrap_or_default();
            k.synced = true;
        }
        Change::Applied(i, o) => {
            let doc = document(i, &o);
            kinds[i].objects.insert(key(&o), doc);
        }
        Change::Deleted(i, o) => {
            kinds[i].objects.remove(&key(&o));
        }
        Change::Failed {
            kind: i,
            missing,
            why,
        } => {
            let k = &mut kinds[i];
            // A kind whose CRD is not installed has no objects: the others
            // need not wait for it. Any other failure is waited out (with
            // backoff), so a flaky API server never yields an empty config.
            if missing && !k.synced {
                tracing::warn!(
                    collection = COLLECTIONS[i].name,
                    "CRD not installed; served empty until it is: {why}"
                );
                k.synced = true;
            } else {
                tracing::warn!(
                    collection = COLLECTIONS[i].name,
                    "list or watch failed; retrying: {why}"
                );
            }
        }
    }
}

fn build(objects: Vec<Json>, previous: &Snapshot) -> Snapshot {
    let checked: Vec<Checked> = objects
        .into_iter()
        .map(|json| {
            let label = format!(
                "{} {}/{}",
                json["kind"].as_str().unwrap_or_default(),
                json["metadata"]["namespace"].as_str().unwrap_or_default(),
                json["metadata"]["name"].as_str().unwrap_or_default()
            );
            match serde_yaml::to_value(&json) {
                Ok(value) => check_value(value, &label),
                Err(e) => Checked::Invalid {
                    key: None,
                    errors: vec![api::config::ConfigError {
                        object: label,
                        field: String::new(),
                        message: e.to_string(),
                    }],
                },
            }
        })
        .collect();
    super::assemble(checked, previous)
}
