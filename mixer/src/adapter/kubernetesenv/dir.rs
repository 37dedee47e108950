//! Locally, the cluster is the File-registry directory Pilot reads: its
//! `v1 Pod` objects are the Pods kubernetesenv knows, re-read on every change.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use super::{PodEntry, PodIndex, Pods};

/// The Pods of every YAML file under `dir`, and what was wrong with the
/// Pods that could not be read (other documents are someone else's).
pub fn load(dir: &Path) -> (Pods, Vec<String>) {
    let (docs, listing) = mesh::dir::v1_objects(dir, &["Pod"]);
    let mut errors: Vec<String> = listing.iter().map(ToString::to_string).collect();
    let mut pods = Vec::new();
    for doc in docs {
        match doc.typed::<Pod>() {
            Ok(pod) => pods.extend(PodEntry::from_pod(&pod)),
            Err(e) => errors.push(e),
        }
    }
    (Pods::new(pods), errors)
}

/// Keeps `index` to the Pods under `dir` until `shutdown`.
pub async fn watch(
    dir: PathBuf,
    index: PodIndex,
    shutdown: CancellationToken,
) -> Result<(), notify::Error> {
    mesh::dir::on_changes(&dir.clone(), shutdown, || {
        let dir = dir.clone();
        let index = index.clone();
        async move {
            match tokio::task::spawn_blocking(move || load(&dir)).await {
                Ok((pods, errors)) => {
                    for e in &errors {
                        tracing::warn!("kubernetesenv: {e}");
                    }
                    tracing::debug!(pods = pods.len(), "kubernetesenv: Pods read");
                    index.set(pods);
                }
                Err(e) => tracing::error!("kubernetesenv: reading Pods failed: {e}"),
            }
        }
    })
    .await
}

/// Two Bookinfo Pods, for tests here and in the dispatcher.
#[cfg(test)]
pub(crate) fn tests_pods() -> Pods {
    use serde::Deserialize;
    let yaml = "metadata:\n  name: productpage-v1-6b746f74dc-9stvs\n  labels: {app: productpage, version: v1, pod-template-hash: 6b746f74dc}\n  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: productpage-v1-6b746f74dc, uid: a, controller: true}]\nstatus: {podIP: 10.1.0.1}\n---\nmetadata:\n  name: reviews-v1-7f99cc4496-gdxfn\n  labels: {app: reviews, version: v1, pod-template-hash: 7f99cc4496}\n  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: reviews-v1-7f99cc4496, uid: b, controller: true}]\nstatus: {podIP: 10.1.0.2}\n";
    Pods::new(
        serde_yaml::Deserializer::from_str(yaml)
            .filter_map(|doc| PodEntry::from_pod(&Pod::deserialize(doc).ok()?)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_come_from_every_file_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cluster.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: reviews-v1, labels: {app: reviews}}\nstatus: {podIP: 10.1.0.2}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: broken}\nspec: {containers: 7}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("more")).unwrap();
        std::fs::write(
            dir.path().join("more/p.yml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: shop}\n",
        )
        .unwrap();
        let (pods, errors) = load(dir.path());
        assert_eq!(pods.len(), 2);
        assert!(pods.find(Some("kubernetes://client.shop"), None).is_some());
        assert!(pods.find(None, Some("10.1.0.2".parse().unwrap())).is_some());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("Pod broken: spec.containers"),
            "{errors:?}"
        );
    }
}
