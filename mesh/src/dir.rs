//! A directory of YAML standing for the cluster or the config store (local
//! mode's `--configDir` and `fs://` URLs): listing its files and noticing
//! when they change. What the documents mean is each reader's business.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A directory that could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot read directory: {source}", path.display())]
pub struct ListError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Every `.yaml`/`.yml` file under `dir`, in path order, and the
/// directories that could not be read. Hidden entries are skipped.
pub fn yaml_files(dir: &Path) -> (Vec<PathBuf>, Vec<ListError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    collect(dir, &mut files, &mut errors, 0);
    files.sort();
    (files, errors)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<ListError>, depth: usize) {
    // Deep enough for any sane layout, shallow enough to stop a symlink loop.
    if depth > 16 {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(source) => {
            errors.push(ListError {
                path: dir.to_path_buf(),
                source,
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect(&path, files, errors, depth + 1);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
}

/// Calls `changed` after each burst of changes under `dir` (100 ms quiet),
/// until `shutdown`; and once as soon as the watch is in place, so an edit
/// made between a first load and the watch is not missed.
pub async fn on_changes<F: Future<Output = ()>>(
    dir: &Path,
    shutdown: CancellationToken,
    mut changed: impl FnMut() -> F,
) -> Result<(), notify::Error> {
    use notify::Watcher;
    // A change is a flag, not a queue: any number of events mean one call.
    let flag = Arc::new(Notify::new());
    let notify = flag.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            notify.notify_one();
        }
    })?;
    watcher.watch(dir, notify::RecursiveMode::Recursive)?;
    flag.notify_one();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = flag.notified() => {}
        }
        // Editors write in bursts; wait for the burst to end.
        while tokio::time::timeout(Duration::from_millis(100), flag.notified())
            .await
            .is_ok()
        {}
        changed().await;
    }
}

/// One Kubernetes object of the directory, of a kind its reader asked for.
pub struct Document {
    pub path: PathBuf,
    pub kind: String,
    pub name: String,
    pub value: serde_json::Value,
}

impl Document {
    /// The object as `T`, or what is wrong with it: file, kind and name,
    /// field, message.
    pub fn typed<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_path_to_error::deserialize(&self.value).map_err(|e| {
            format!(
                "{}: {} {}: {}: {}",
                self.path.display(),
                self.kind,
                self.name,
                e.path(),
                e.inner()
            )
        })
    }
}

/// Every `v1` object of one of `kinds` in the YAML under `dir`, and the
/// directories that could not be listed. Files or documents that do not
/// parse are skipped: they are the config store's to report.
pub fn v1_objects(dir: &Path, kinds: &[&str]) -> (Vec<Document>, Vec<ListError>) {
    use serde::Deserialize;
    let (files, errors) = yaml_files(dir);
    let mut found = Vec::new();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(value) = serde_json::Value::deserialize(doc) else {
                continue;
            };
            let text_at = |p: &str| {
                value
                    .pointer(p)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
            };
            let kind = text_at("/kind");
            if text_at("/apiVersion") != "v1" || !kinds.contains(&kind) {
                continue;
            }
            found.push(Document {
                path: path.clone(),
                kind: kind.to_string(),
                name: text_at("/metadata/name").to_string(),
                value: value.clone(),
            });
        }
    }
    (found, errors)
}
