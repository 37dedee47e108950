//! On Kubernetes, the Pods come from the API server: one kube-rs watcher over
//! every namespace's Pods, as Istio's adapter kept a Pod cache. The index is
//! replaced only once the first listing is complete, so a half-read cluster
//! never passes for the truth; after that, changes are published at most
//! every [`PUBLISH_EVERY`], so a rollout's stream of Pod updates rebuilds the
//! index a few times, not once per event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{PodEntry, PodIndex, Pods};

/// Events already waiting are taken together.
const BURST: usize = 512;

/// The index is rebuilt from every Pod, so not more often than this.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Keeps `index` to the cluster's Pods until `shutdown`. Listing and
/// watching failures are retried with kube-rs's backoff; until the first
/// listing completes, `index` keeps what it had.
pub async fn watch(client: kube::Client, index: PodIndex, shutdown: CancellationToken) {
    let pods: Api<Pod> = Api::all(client);
    let mut events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .ready_chunks(BURST)
        .boxed();
    // Ordered by namespace/name, so Pods sharing an address resolve the same
    // way at every publish.
    let mut known: BTreeMap<String, Arc<PodEntry>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Arc<PodEntry>>> = None;
    let mut synced = false;
    let mut failing = false;
    let mut pending = false;
    let mut published = Instant::now();
    loop {
        let due = published + PUBLISH_EVERY;
        let burst = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(due), if pending => {
                publish(&index, &known);
                (pending, published) = (false, Instant::now());
                continue;
            }
            burst = events.next() => match burst {
                Some(burst) => burst,
                None => return,
            },
        };
        for event in burst {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    // Each retry restarts with `Init`: say so once per
                    // outage, not per try.
                    if !failing {
                        tracing::warn!("kubernetesenv: watching Pods failed, retrying: {e}");
                    }
                    failing = true;
                    continue;
                }
            };
            match event {
                watcher::Event::Init => listing = Some(BTreeMap::new()),
                watcher::Event::InitApply(pod) => {
                    if let (Some(listing), Some((key, entry))) = (listing.as_mut(), entry(&pod)) {
                        listing.insert(key, entry);
                    }
                }
                watcher::Event::InitDone => {
                    if let Some(listed) = listing.take() {
                        known = listed;
                        if synced {
                            pending = true;
                        } else {
                            tracing::info!(pods = known.len(), "kubernetesenv: Pods listed");
                            publish(&index, &known);
                            (synced, published) = (true, Instant::now());
                        }
                    }
                }
                watcher::Event::Apply(pod) => {
                    match entry(&pod) {
                        Some((key, entry)) => known.insert(key, entry),
                        None => known.remove(&key_of(&pod)),
                    };
                    pending = true;
                }
                watcher::Event::Delete(pod) => {
                    pending |= known.remove(&key_of(&pod)).is_some();
                }
            }
            if failing && listing.is_none() {
                tracing::info!("kubernetesenv: watching Pods again");
                failing = false;
            }
        }
        pending &= synced;
    }
}

fn publish(index: &PodIndex, known: &BTreeMap<String, Arc<PodEntry>>) {
    index.set(Pods::shared(known.values().cloned()));
    tracing::debug!(pods = known.len(), "kubernetesenv: Pods published");
}

fn key_of(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn entry(pod: &Pod) -> Option<(String, Arc<PodEntry>)> {
    Some((key_of(pod), Arc::new(PodEntry::from_pod(pod)?)))
}
