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

use api::config::{ConfigError, ConfigObject, Document, parse_documents};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{ConfigSnapshot, ConfigSource, Rejection};
use crate::registry::ClusterState;
use crate::registry::file::{ObjectId, add_object};

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

    /// Reads the directory. What cannot be read now (a directory listing or a
    /// file failing with permissions or too many open files) keeps its last
    /// good objects and is reported; only a file that is gone takes its objects
    /// with it.
    pub fn load(&mut self) -> DirSnapshot {
        let mut acc = Accumulator::default();
        let listing = list_yaml_files(&self.dir);
        let mut files = HashMap::new();
        for (dir, error) in &listing.errors {
            let name = dir.display().to_string();
            acc.reject(&name, "directory", "", error.clone());
            // Everything last read from below an unreadable directory stays.
            for (path, parsed) in self.files.extract_if(|p, _| p.starts_with(dir)) {
                files.insert(path, parsed);
            }
        }
        for path in listing.files {
            let name = path.display().to_string();
            let previous = self.files.remove(&path);
            let parsed = match std::fs::read_to_string(&path) {
                Ok(text) => match previous {
                    Some(p) if p.hash == text_hash(&text) => p,
                    previous => parse_file(&name, &text, previous),
                },
                // Vanished between listing and reading: like a deleted file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    acc.reject(&name, "file", "", format!("cannot read: {e}"));
                    match previous {
                        Some(p) => p,
                        None => continue,
                    }
                }
            };
            files.insert(path, parsed);
        }
        let mut paths: Vec<&PathBuf> = files.keys().collect();
        paths.sort();
        for path in paths {
            acc.add(&path.display().to_string(), &files[path]);
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
            // Reading and parsing a directory blocks; it runs off the async workers.
            let (loader, snapshot) = tokio::task::spawn_blocking(move || {
                let snapshot = self.load();
                (self, snapshot)
            })
            .await?;
            self = loader;
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

/// The directory as a [`ConfigSource`]: the Istio part of what the loader publishes.
pub struct DirSource {
    dir: watch::Receiver<Option<Arc<DirSnapshot>>>,
}

impl DirSource {
    pub fn new(dir: watch::Receiver<Option<Arc<DirSnapshot>>>) -> DirSource {
        DirSource { dir }
    }
}

impl ConfigSource for DirSource {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn run(
        self: Box<Self>,
        out: watch::Sender<Option<Arc<ConfigSnapshot>>>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        project(self.dir, out, |s| s.config.clone(), shutdown).boxed()
    }
}

/// Republishes one part of every directory snapshot, when that part changed:
/// the loader reads the directory once for both the config and the File
/// registry.
pub async fn project<T: PartialEq + Send + Sync + 'static>(
    mut dir: watch::Receiver<Option<Arc<DirSnapshot>>>,
    out: watch::Sender<Option<Arc<T>>>,
    part: fn(&DirSnapshot) -> Arc<T>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let current = dir.borrow_and_update().as_deref().map(part);
        if let Some(current) = current {
            out.send_if_modified(|published| {
                let changed = published.as_ref() != Some(&current);
                if changed {
                    *published = Some(current);
                }
                changed
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = dir.changed() => if r.is_err() { return Ok(()) },
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
    mixer: crate::config::policy::MixerObjects,
    rejections: Vec<Rejection>,
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    h.write(text.as_bytes());
    h.finish()
}

/// Parses one file. A YAML syntax error anywhere in it keeps the whole of its
/// last good version in force (the file cannot be read, so nothing in it can
/// be trusted to be gone); an error in one object keeps that object's last
/// good version.
fn parse_file(file: &str, text: &str, previous: Option<ParsedFile>) -> ParsedFile {
    let mut parsed = ParsedFile {
        hash: text_hash(text),
        ..Default::default()
    };
    let mut errors = Vec::new();
    for doc in parse_documents(text) {
        match doc {
            Ok(Document::Config(obj)) => {
                parsed.good.insert(obj.key(), Arc::from(obj));
            }
            Ok(Document::Other(other)) if crate::config::policy::is_mixer_kind(&other) => {
                parsed.mixer.note(&other);
            }
            Ok(Document::Other(other)) => {
                let id = ObjectId::of(&other);
                if let Err(error) = add_object(&mut parsed.cluster, other) {
                    if let Some(previous) = &previous {
                        id.keep(&mut parsed.cluster, &previous.cluster);
                    }
                    errors.push(error);
                }
            }
            Err(error) if error.is_syntax() => {
                let mut kept = previous.unwrap_or_default();
                kept.hash = parsed.hash;
                kept.rejections = vec![Rejection {
                    file: file.to_string(),
                    error,
                }];
                return kept;
            }
            Err(error) => {
                if let Some(old) = previous.as_ref().and_then(|p| p.good.get(&error.object)) {
                    parsed.good.insert(error.object.clone(), old.clone());
                }
                errors.push(error);
            }
        }
    }
    parsed.rejections = errors
        .into_iter()
        .map(|error| Rejection {
            file: file.to_string(),
            error,
        })
        .collect();
    parsed
}

#[derive(Default)]
struct Accumulator {
    config: ConfigSnapshot,
    mixer: crate::config::policy::MixerObjects,
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
        self.mixer.extend(&parsed.mixer);
        for (key, obj) in &parsed.good {
            if let Some(earlier) = self.config.insert(obj.clone())
                && earlier != *obj
            {
                let message = "defined more than once in the directory; the last file read wins";
                self.reject(file, key, "metadata.name", message.into());
            }
        }
    }

    fn finish(mut self) -> DirSnapshot {
        self.config.policy_namespaces = self.mixer.policy_namespaces();
        DirSnapshot {
            config: Arc::new(self.config),
            cluster: Arc::new(self.cluster),
            rejections: Arc::new(self.rejections),
        }
    }
}

struct Listing {
    files: Vec<PathBuf>,
    /// Directories that could not be read, with why.
    errors: Vec<(PathBuf, String)>,
}

/// Every `.yaml`/`.yml` file below `dir`, following symlinks but never into
/// a directory already visited (a symlink loop is reported, not followed).
fn list_yaml_files(dir: &Path) -> Listing {
    use std::os::unix::fs::MetadataExt;
    let mut listing = Listing {
        files: Vec::new(),
        errors: Vec::new(),
    };
    let mut visited = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::metadata(&d).and_then(|m| {
            if visited.insert((m.dev(), m.ino())) {
                std::fs::read_dir(&d).map(Some)
            } else {
                Ok(None)
            }
        });
        let entries = match entries {
            Ok(Some(entries)) => entries,
            Ok(None) => {
                if is_loop(&d) {
                    let why = "symlink loop: links back to a directory above it; not followed";
                    listing.errors.push((d, why.into()));
                } else {
                    tracing::debug!(dir = %d.display(), "directory already read through another link");
                }
                continue;
            }
            Err(e) => {
                listing.errors.push((d, format!("cannot read: {e}")));
                continue;
            }
        };
        for entry in entries {
            let path = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    listing
                        .errors
                        .push((d.clone(), format!("cannot read: {e}")));
                    continue;
                }
            };
            // Hidden entries are editors' temporaries and Kubernetes' own
            // `..data` links of a mounted ConfigMap, which would read every
            // file twice.
            if path
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                listing.files.push(path);
            }
        }
    }
    listing.files.sort();
    listing
}

/// Does `dir` resolve to one of the directories it is reached through?
fn is_loop(dir: &Path) -> bool {
    let (Ok(target), Some(Ok(parent))) = (
        std::fs::canonicalize(dir),
        dir.parent().map(std::fs::canonicalize),
    ) else {
        return false;
    };
    parent.starts_with(target)
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

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: r, namespace: default}\nspec: {ports: [{name: http, port: 80}]}\n";

    #[test]
    fn a_yaml_syntax_error_keeps_the_whole_file_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mesh.yaml");
        let mut loader = DirLoader::new(dir.path());
        std::fs::write(&file, format!("{VS}---\n{SVC}")).unwrap();
        let good = loader.load();
        assert_eq!((good.config.len(), good.cluster.services.len()), (1, 1));
        std::fs::write(&file, format!("{VS}---\n{SVC}---\nspec: [unclosed\n")).unwrap();
        let broken = loader.load();
        assert_eq!(broken.config, good.config);
        assert_eq!(broken.cluster, good.cluster);
        assert_eq!(broken.rejections.len(), 1);
        assert!(broken.rejections[0].file.ends_with("mesh.yaml"));
        assert!(
            broken.rejections[0].error.is_syntax(),
            "{:?}",
            broken.rejections
        );
    }

    #[test]
    fn an_unreadable_file_keeps_its_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vs.yaml");
        let mut loader = DirLoader::new(dir.path());
        std::fs::write(&file, VS).unwrap();
        let good = loader.load();
        // Not UTF-8: reading it as text fails, as a permission error would.
        std::fs::write(&file, b"\xff\xfe\x00garbage").unwrap();
        let unreadable = loader.load();
        assert_eq!(unreadable.config, good.config);
        assert_eq!(unreadable.rejections.len(), 1);
        assert!(
            unreadable.rejections[0]
                .error
                .message
                .starts_with("cannot read")
        );
    }

    #[test]
    fn symlink_loops_are_reported_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/vs.yaml"), VS).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop")).unwrap();
        let snap = DirLoader::new(dir.path()).load();
        assert_eq!(snap.config.len(), 1);
        assert_eq!(snap.rejections.len(), 1, "{:?}", snap.rejections);
        assert!(snap.rejections[0].error.message.contains("symlink loop"));
        assert!(snap.rejections[0].file.ends_with("sub/loop"));
    }

    /// The layout of a ConfigMap volume: the files are links through `..data`.
    #[test]
    fn a_mounted_config_map_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..2026_11_24")).unwrap();
        std::fs::write(root.join("..2026_11_24/vs.yaml"), VS).unwrap();
        std::os::unix::fs::symlink("..2026_11_24", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/vs.yaml", root.join("vs.yaml")).unwrap();
        let snap = DirLoader::new(root).load();
        assert_eq!(snap.config.len(), 1);
        assert!(snap.rejections.is_empty(), "{:?}", snap.rejections);
    }

    #[test]
    fn a_bad_edit_of_a_service_keeps_its_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.yaml");
        let mut loader = DirLoader::new(dir.path());
        std::fs::write(&file, SVC).unwrap();
        let good = loader.load();
        std::fs::write(&file, SVC.replace("port: 80", "port: 0")).unwrap();
        let bad = loader.load();
        assert_eq!(bad.cluster, good.cluster, "the Service on port 80 stays");
        assert_eq!(bad.rejections[0].error.field, "spec.ports[0].port");
    }

    #[test]
    fn ports_out_of_range_are_rejected_with_their_field() {
        let snap = snapshot_from_texts(&[(
            "c.yaml",
            &format!(
                "{}---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: r}}\nsubsets: [{{ports: [{{port: -1}}]}}]\n",
                SVC.replace("port: 80", "port: 70000")
            ),
        )]);
        assert!(snap.cluster.services.is_empty() && snap.cluster.endpoints.is_empty());
        let fields: Vec<_> = snap
            .rejections
            .iter()
            .map(|r| (r.error.object.as_str(), r.error.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("Service r", "spec.ports[0].port"),
                ("Endpoints r", "subsets[0].ports[0].port")
            ]
        );
    }
}
