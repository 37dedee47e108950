//! `--configPath`: every YAML file under a directory, watched. Istio 1.4
//! re-read its directory only on SIGUSR1; here an edit is served as soon as
//! the editor's burst of writes ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use xxhash_rust::xxh3::xxh3_64;

use crate::snapshot::Snapshot;
use crate::validate::{Checked, check_text};

/// Reads the directory; each file is re-checked only when its text changed.
pub struct DirSource {
    dir: PathBuf,
    files: HashMap<PathBuf, ParsedFile>,
}

struct ParsedFile {
    hash: u64,
    checked: Vec<Checked>,
}

impl ParsedFile {
    fn has_syntax_error(&self) -> bool {
        self.checked
            .last()
            .is_some_and(|c| matches!(c, Checked::Invalid { errors, .. } if errors[0].is_syntax()))
    }
}

impl DirSource {
    pub fn new(dir: impl Into<PathBuf>) -> DirSource {
        DirSource {
            dir: dir.into(),
            files: HashMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory into the snapshot that follows `previous`.
    pub fn load(&mut self, previous: &Snapshot) -> Snapshot {
        let (paths, listing) = mesh::dir::yaml_files(&self.dir);
        let mut checked = Vec::new();
        for e in listing {
            checked.push(Checked::Invalid {
                key: None,
                errors: vec![api::config::ConfigError {
                    object: e.path.display().to_string(),
                    field: String::new(),
                    message: format!("cannot read directory: {}", e.source),
                }],
            });
        }
        let mut files = HashMap::new();
        for path in paths {
            let name = path
                .strip_prefix(&self.dir)
                .unwrap_or(&path)
                .display()
                .to_string();
            let previous_file = self.files.remove(&path);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    checked.push(Checked::Invalid {
                        key: None,
                        errors: vec![api::config::ConfigError {
                            object: name,
                            field: String::new(),
                            message: format!("cannot read: {e}"),
                        }],
                    });
                    // What it held stays until it can be read again.
                    if let Some(p) = previous_file {
                        files.insert(path, p);
                    }
                    continue;
                }
            };
            let hash = xxh3_64(text.as_bytes());
            let parsed = match previous_file {
                Some(p) if p.hash == hash => p,
                previous_file => {
                    let mut parsed = ParsedFile {
                        hash,
                        checked: check_text(&name, &text),
                    };
                    // Half-written YAML: the objects the file held before stay
                    // (the error is still reported).
                    if parsed.has_syntax_error()
                        && let Some(p) = previous_file
                    {
                        let syntax = parsed.checked.pop();
                        parsed.checked = p
                            .checked
                            .into_iter()
                            .filter(|c| matches!(c, Checked::Valid(_)))
                            .chain(syntax)
                            .collect();
                    }
                    parsed
                }
            };
            files.insert(path, parsed);
        }
        let mut paths: Vec<&PathBuf> = files.keys().collect();
        paths.sort();
        for path in paths {
            checked.extend(files[path].checked.iter().cloned());
        }
        self.files = files;
        super::assemble(checked, previous)
    }

    /// Publishes a snapshot now and after every change, until `shutdown`;
    /// `synced` turns true once the first one is out.
    pub async fn watch(
        self,
        out: watch::Sender<Arc<Snapshot>>,
        synced: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let dir = self.dir.clone();
        let out = &out;
        let this = std::sync::Mutex::new(Some(self));
        let reload = || async {
            let Some(mut source) = this.lock().unwrap_or_else(|p| p.into_inner()).take() else {
                return;
            };
            let previous = out.borrow().clone();
            let loaded = tokio::task::spawn_blocking(move || {
                let next = source.load(&previous);
                (source, next)
            })
            .await;
            let Ok((source, next)) = loaded else {
                // Read afresh next time: the last snapshot stays meanwhile.
                tracing::error!("reading the config directory panicked; the last snapshot stays");
                *this.lock().unwrap_or_else(|p| p.into_inner()) = Some(DirSource::new(&dir));
                return;
            };
            *this.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
            super::publish(out, next);
            synced.send_if_modified(|s| !std::mem::replace(s, true));
        };
        mesh::dir::on_changes(&dir, shutdown, reload)
            .await
            .map_err(|e| anyhow::anyhow!("cannot watch {} (--configPath): {e}", dir.display()))
    }
}
