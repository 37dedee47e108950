//! On Kubernetes, the Pods come from the API server: one kube-rs watcher over
//! every namespace's Pods, as Istio's adapter kept a Pod cache. The index is
//! replaced only once the first listing is complete, so a half-read cluster
//! never passes for the truth; after that, each burst of events is applied
//! and published as one new index.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::{PodEntry, PodIndex, Pods};

/// Events taken together before the index is published again: a rollout's
/// hundreds of Pod updates make a few new indexes, not hundreds.
const BURST: usize = 512;

/// Keeps `index` to the cluster's Pods until `shutdown`. Listing and
/// watching failures are retried with kube-rs's backoff; until the first
/// listing completes, `index` keeps what it had.
pub async fn watch(client: kube::Client, index: PodIndex, shutdown: CancellationToken) {
    let pods: Api<Pod> = Api::all(client);
    let mut events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .ready_chunks(BURST)
        .boxed();
    let mut known: HashMap<String, Arc<PodEntry>> = HashMap::new();
    let mut listing: Option<HashMap<String, Arc<PodEntry>>> = None;
    let mut synced = false;
    let mut failing = false;
    loop {
        let burst = tokio::select! {
            _ = shutdown.cancelled() => return,
            burst = events.next() => match burst {
                Some(burst) => burst,
                None => return,
            },
        };
        let mut changed = false;
        for event in burst {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    // Backoff retries; say so once per outage, not per try.
                    if !failing {
                        tracing::warn!("kubernetesenv: watching Pods failed, retrying: {e}");
                    }
                    failing = true;
                    continue;
                }
            };
            if failing {
                tracing::info!("kubernetesenv: watching Pods again");
                failing = false;
            }
            match event {
                watcher::Event::Init => listing = Some(HashMap::new()),
                watcher::Event::InitApply(pod) => {
                    if let (Some(listing), Some((key, entry))) = (listing.as_mut(), entry(&pod)) {
                        listing.insert(key, entry);
                    }
                }
                watcher::Event::InitDone => {
                    if let Some(listed) = listing.take() {
                        known = listed;
                        changed = true;
                        if !synced {
                            tracing::info!(pods = known.len(), "kubernetesenv: Pods listed");
                            synced = true;
                        }
                    }
                }
                watcher::Event::Apply(pod) => {
                    if let Some((key, entry)) = entry(&pod) {
                        known.insert(key, entry);
                    } else {
                        known.remove(&key_of(&pod));
                    }
                    changed = true;
                }
                watcher::Event::Delete(pod) => {
                    changed |= known.remove(&key_of(&pod)).is_some();
                }
            }
        }
        if changed && synced {
            index.set(Pods::shared(known.values().cloned()));
            tracing::debug!(pods = known.len(), "kubernetesenv: Pods updated");
        }
    }
}

fn key_of(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn entry(pod: &Pod) -> Option<(String, Arc<PodEntry>)> {
    Some((key_of(pod), Arc::new(PodEntry::from_pod(pod)?)))
}
