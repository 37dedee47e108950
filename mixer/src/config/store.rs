//! Config stores: `fs:///dir`, every YAML file under a directory, re-read
//! when anything in it changes; and `mcp://host:port`, Galley, over MCP
//! ([`mcp`]). Each change yields a new snapshot; an object that cannot be
//! read or compiled costs only itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use super::{ConfigError, Object, Snapshot, parse_file};
use crate::adapter::Registry;

/// Where `--configStoreURL` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Url {
    Dir(PathBuf),
    /// `host:port` of an MCP source; `tls` for `mcps://`.
    Mcp {
        address: String,
        tls: bool,
    },
}

/// `--configStoreURL`: `fs:///dir`, `mcp://host:port` or `mcps://host:port`.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let mcp = [("mcp://", false), ("mcps://", true)]
        .into_iter()
        .find_map(|(scheme, tls)| url.strip_prefix(scheme).map(|a| (a, tls)));
    if let Some((address, tls)) = mcp {
        let address = address.trim_end_matches('/');
        if address
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!(
                "{url:?}: an MCP URL needs host:port (mcp://istio-galley:9901)"
            ));
        }
        return Ok(Url::Mcp {
            address: address.to_string(),
            tls,
        });
    }
    if url.starts_with("k8s://") {
        return Err(format!(
            "{url:?}: not supported; use mcp://host:port (Galley) or fs:///dir"
        ));
    }
    match url.strip_prefix("fs://") {
        Some(path) if path.starts_with('/') => Ok(Url::Dir(PathBuf::from(path))),
        Some(_) => Err(format!(
            "{url:?}: an fs:// URL needs an absolute path (fs:///dir)"
        )),
        None => Err(format!(
            "{url:?}: expected fs:///dir, mcp://host:port or mcps://host:port"
        )),
    }
}

/// Reads every `.yaml`/`.yml` file under `dir`, in path order.
pub fn load_dir(dir: &Path, default_namespace: &str) -> (Vec<Object>, Vec<ConfigError>) {
    let (files, listing) = mesh::dir::yaml_files(dir);
    let mut errors: Vec<ConfigError> = listing
        .into_iter()
        .map(|e| ConfigError {
            object: e.path.display().to_string(),
            field: String::new(),
            message: format!("cannot read directory: {}", e.source),
        })
        .collect();
    let mut objects = Vec::new();
    for path in files {
        let source = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for result in parse_file(&source, &text, default_namespace) {
                    match result {
                        Ok(o) => objects.push(o),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(e) => errors.push(ConfigError {
                object: source,
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    (objects, errors)
}

/// The current snapshot, swapped whole on each change.
#[derive(Clone)]
pub struct Current(Arc<RwLock<Arc<Snapshot>>>);

impl Current {
    pub fn new(snapshot: Snapshot) -> Current {
        Current(Arc::new(RwLock::new(Arc::new(snapshot))))
    }

    pub fn get(&self) -> Arc<Snapshot> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, snapshot: Snapshot) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
    }
}

/// Objects a binary carries under the store's (mixer-telemetry's default
/// telemetry config): an object of the store with the same name replaces
/// one of these, which is no conflict.
#[derive(Clone, Default)]
pub struct Base(Arc<Vec<Object>>);

impl Base {
    pub fn new(objects: Vec<Object>) -> Base {
        Base(Arc::new(objects))
    }

    pub fn objects(&self) -> Vec<Object> {
        self.0.to_vec()
    }

    pub(crate) fn under(
        &self,
        (objects, errors): (Vec<Object>, Vec<ConfigError>),
    ) -> (Vec<Object>, Vec<ConfigError>) {
        if self.0.is_empty() {
            return (objects, errors);
        }
        let mine: std::collections::HashSet<String> =
            objects.iter().map(Object::full_name).collect();
        let mut all: Vec<Object> = self
            .0
            .iter()
            .filter(|o| !mine.contains(&o.full_name()))
            .cloned()
            .collect();
        all.extend(objects);
        (all, errors)
    }
}

/// Loads `dir` once, synchronously, into a first snapshot.
pub fn initial(dir: &Path, default_namespace: &str, base: &Base, adapters: &Registry) -> Snapshot {
    let (objects, errors) = base.under(load_dir(dir, default_namespace));
    let snapshot = Snapshot::build(
        &objects,
        errors,
        &Snapshot::empty(default_namespace),
        adapters,
    );
    log(&snapshot);
    snapshot
}

pub(crate) fn log(s: &Snapshot) {
    tracing::info!(
        generation = s.generation,
        objects = s.objects,
        rules = s.rules.len(),
        handlers = s.handlers.len(),
        errors = s.errors.len(),
        "config loaded"
    );
    for e in &s.errors {
        tracing::warn!(object = %e.object, field = %e.field, "rejected: {}", e.message);
    }
}

/// Watches `dir` and rebuilds `current` after each burst of changes, until
/// `shutdown`. `on_change` runs after each swap.
pub async fn watch(
    dir: PathBuf,
    default_namespace: String,
    base: Base,
    adapters: Registry,
    current: Current,
    on_change: impl Fn(&Snapshot) + Send + Sync + 'static,
    shutdown: CancellationToken,
) -> Result<(), notify::Error> {
    let reload = || {
        let previous = current.get();
        let dir = dir.clone();
        let ns = default_namespace.clone();
        let adapters = adapters.clone();
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            let (objects, errors) = base.under(load_dir(&dir, &ns));
            Snapshot::build(&objects, errors, &previous, &adapters)
        })
    };
    mesh::dir::on_changes(&dir, shutdown, || async {
        match reload().await {
            Ok(snapshot) => {
                log(&snapshot);
                on_change(&snapshot);
                current.set(snapshot);
            }
            Err(e) => tracing::error!("config reload failed: {e}"),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_store_urls() {
        assert_eq!(
            parse_url("fs:///etc/istio/config"),
            Ok(Url::Dir("/etc/istio/config".into()))
        );
        assert_eq!(
            parse_url("mcp://istio-galley.istio-system.svc:9901"),
            Ok(Url::Mcp {
                address: "istio-galley.istio-system.svc:9901".into(),
                tls: false
            })
        );
        assert_eq!(
            parse_url("mcps://istio-galley.istio-system.svc:9901/"),
            Ok(Url::Mcp {
                address: "istio-galley.istio-system.svc:9901".into(),
                tls: true
            })
        );
        for bad in [
            "mcp://istio-galley",
            "mcps://:9901",
            "fs://relative",
            "k8s://",
            "http://x:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
