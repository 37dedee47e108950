//! Loading and watching a directory of YAML: Istio kinds go to the config
//! snapshot, Kubernetes `Service`/`Endpoints`/`Pod`/`Node` objects to the File
//! registry's cluster state.
//!
//! Each object is accepted or rejected on its own. A rejected object that was
//! accepted before keeps its last good version, so a bad edit never takes a
//! working route away from Envoy.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::config::{ConfigError, ConfigObject, Document, OtherDocument, parse_documents};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use notify::{RecursiveMode, Watcher};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{ConfigSnapshot, Rejection};
use crate::registry::ClusterState;
use crate::registry::state::{PodInfo, key};

/// What one read of the directory produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirSnapshot {
    pub config: Arc<ConfigSnapshot>,
    pub cluster: Arc<ClusterState>,
    pub rejections: Arc<Vec<Rejection>>,
}

/// Reads the directory. Each file's parse is kept until the file changes: an
/// edit re-parses one file, not the whole directory, and a file's last good
/// objects stand in for the ones its new version gets wrong.
#[derive(Debug)]
pub struct DirLoader {
    dir: PathBuf,
    files: HashMap<PathBuf, ParsedFile>,
}

impl DirLoader {
    pub fn new(dir: impl Into<PathBuf>) -> DirLoader {
        DirLoader {
            dir: dir.into(),
            files: HashMap::new(),
        }
    }

    pub fn load(&mut self) -> DirSnapshot {
        let mut acc = Accumulator::default();
        let paths = match yaml_files(&self.dir) {
            Ok(paths) => paths,
            Err(e) => {
                acc.reject(
                    &self.dir.display().to_string(),
                    "directory",
                    "",
                    format!("cannot read: {e}"),
                );
                Vec::new()
            }
        };
        let mut files = HashMap::new();
        for path in paths {
            let name = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    // Vanished between listing and reading: treat like a deleted file.
                    tracing::debug!(file = %name, error = %e, "skipping unreadable file");
                    continue;
                }
            };
            let previous = self.files.remove(&path);
            let parsed = match previous {
                Some(p) if p.hash == text_hash(&text) => p,
                previous => parse_file(&name, &text, previous.as_ref()),
            };
            acc.add(&name, &parsed);
            files.insert(path, parsed);
        }
        self.files = files;
        acc.finish()
    }

    /// Publishes a snapshot now and after every change in the directory, until
    /// `shutdown`. Change events are coalesced: a burst of writes is one reload.
    pub async fn watch(
        mut self,
        out: watch::Sender<Option<Arc<DirSnapshot>>>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    // Full means a reload is already pending; it will see this change.
                    let _ = tx.try_send(());
                }
            })?;
        watcher
            .watch(&self.dir, RecursiveMode::Recursive)
            .map_err(|e| {
                anyhow::anyhow!("cannot watch {} (--configDir): {e}", self.dir.display())
            })?;
        loop {
            let snapshot = self.load();
            for r in snapshot.rejections.iter() {
                tracing::warn!(rejection = %r, "config rejected");
            }
            out.send_if_modified(|current| {
                if current.as_deref() == Some(&snapshot) {
                    false
                } else {
                    tracing::info!(
                        objects = snapshot.config.len(),
                        services = snapshot.cluster.services.len(),
                        rejected = snapshot.rejections.len(),
                        "config directory loaded"
                    );
                    *current = Some(Arc::new(snapshot));
                    true
                }
            });
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                event = rx.recv() => if event.is_none() { return Ok(()) },
            }
        }
    }
}

/// Parses YAML texts as if each were a file of the directory: for tests,
/// benchmarks and tools that hold config in memory.
pub fn snapshot_from_texts(files: &[(&str, &str)]) -> DirSnapshot {
    let mut acc = Accumulator::default();
    for (name, text) in files {
        acc.add(name, &parse_file(name, text, None));
    }
    acc.finish()
}

/// One file's objects, accepted and rejected.
#[derive(Debug, Default)]
struct ParsedFile {
    hash: u64,
    good: BTreeMap<String, Arc<ConfigObject>>,
    cluster: ClusterState,
    rejections: Vec<Rejection>,
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    h.write(text.as_bytes());
    h.finish()
}

fn parse_file(file: &str, text: &str, previous: Option<&ParsedFile>) -> ParsedFile {
    let mut parsed = ParsedFile {
        hash: text_hash(text),
        ..Default::default()
    };
    let reject = |parsed: &mut ParsedFile, error| {
        parsed.rejections.push(Rejection {
            file: file.to_string(),
            error,
        })
    };
    for doc in parse_documents(text) {
        match doc {
            Ok(Document::Config(obj)) => {
                parsed.good.insert(obj.key(), Arc::from(obj));
            }
            Ok(Document::Other(other)) => {
                if let Err(error) = add_kube_object(&mut parsed.cluster, other) {
                    reject(&mut parsed, error);
                }
            }
            Err(error) => {
                if let Some(old) = previous.and_then(|p| p.good.get(&error.object)) {
                    parsed.good.insert(error.object.clone(), old.clone());
                }
                reject(&mut parsed, error);
            }
        }
    }
    parsed
}

#[derive(Default)]
struct Accumulator {
    config: ConfigSnapshot,
    cluster: ClusterState,
    rejections: Vec<Rejection>,
}

impl Accumulator {
    fn reject(&mut self, file: &str, object: &str, field: &str, message: String) {
        self.rejections.push(Rejection {
            file: file.to_string(),
            error: ConfigError {
                object: object.to_string(),
                field: field.to_string(),
                message,
            },
        });
    }

    fn add(&mut self, file: &str, parsed: &ParsedFile) {
        let c = &parsed.cluster;
        self.cluster
            .services
            .extend(c.services.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.cluster
            .endpoints
            .extend(c.endpoints.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.cluster
            .pods
            .extend(c.pods.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.cluster
            .nodes
            .extend(c.nodes.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.rejections.extend(parsed.rejections.iter().cloned());
        for (key, obj) in &parsed.good {
            if let Some(earlier) = self.config.insert(obj.clone())
                && earlier != *obj
            {
                let message = "defined more than once in the directory; the last file read wins";
                self.reject(file, key, "metadata.name", message.into());
            }
        }
    }

    fn finish(self) -> DirSnapshot {
        DirSnapshot {
            config: Arc::new(self.config),
            cluster: Arc::new(self.cluster),
            rejections: Arc::new(self.rejections),
        }
    }
}

fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn add_kube_object(cluster: &mut ClusterState, doc: OtherDocument) -> Result<(), ConfigError> {
    fn typed<T: DeserializeOwned>(doc: &OtherDocument) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(&doc.value).map_err(|e| ConfigError {
            object: format!(
                "{} {}",
                doc.kind,
                doc.value
                    .pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("(unnamed)")
            ),
            field: e.path().to_string(),
            message: e.into_inner().to_string(),
        })
    }
    match (doc.api_version.as_str(), doc.kind.as_str()) {
        ("v1", "Service") => {
            let s: Service = typed(&doc)?;
            cluster.services.insert(key(&s.metadata), s);
        }
        ("v1", "Endpoints") => {
            let e: Endpoints = typed(&doc)?;
            cluster.endpoints.insert(key(&e.metadata), e);
        }
        ("v1", "Pod") => {
            let p: Pod = typed(&doc)?;
            cluster.pods.insert(key(&p.metadata), PodInfo::from(&p));
        }
        ("v1", "Node") => {
            let n: Node = typed(&doc)?;
            cluster
                .nodes
                .insert(n.metadata.name.clone().unwrap_or_default(), n);
        }
        // Read by other components (Citadel, the injector), not Pilot.
        ("v1", "ServiceAccount" | "Namespace" | "ConfigMap" | "Secret") => {}
        (api_version, kind) => {
            return Err(ConfigError {
                object: kind.to_string(),
                field: "apiVersion".into(),
                message: format!("{api_version} {kind} is not a kind Pilot reads"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - destination: {host: r}\n";

    #[test]
    fn a_rejected_edit_keeps_the_last_good_object() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vs.yaml");
        let mut loader = DirLoader::new(dir.path());
        std::fs::write(&file, VS).unwrap();
        let first = loader.load();
        assert_eq!(first.config.len(), 1);
        std::fs::write(&file, VS.replace("hosts", "hostz")).unwrap();
        let second = loader.load();
        assert_eq!(second.config, first.config, "last good kept");
        assert_eq!(second.rejections.len(), 1);
        assert_eq!(second.rejections[0].error.field, "spec.hostz");
        std::fs::remove_file(&file).unwrap();
        let third = loader.load();
        assert!(
            third.config.is_empty(),
            "a deleted file takes its objects with it"
        );
        assert!(third.rejections.is_empty());
    }

    #[test]
    fn kubernetes_objects_go_to_the_cluster_state() {
        let snap = snapshot_from_texts(&[(
            "c.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n",
        )]);
        assert!(snap.cluster.services.contains_key("ns/a"));
        assert_eq!(snap.rejections.len(), 1);
        assert_eq!(snap.rejections[0].error.object, "Pod p");
        assert_eq!(snap.rejections[0].error.field, "spec.containers");
    }

    #[test]
    fn duplicates_are_reported() {
        let snap = snapshot_from_texts(&[("a.yaml", VS), ("b.yaml", &VS.replace("[r]", "[s]"))]);
        assert_eq!(snap.config.len(), 1);
        assert!(snap.rejections[0].error.message.contains("more than once"));
    }
}
