//! Local mode's Secrets and ServiceAccounts.
//!
//! Secrets (`--secrets-dir DIR`): `DIR/<namespace>/<name>/` holds one file
//! per key, laid out as the kubelet mounts a Secret volume: the files are
//! links into `..data`, itself a link to a timestamped directory that is
//! swapped in one rename. A reader (Envoy, pilot-agent) never sees a key
//! from one issue next to a certificate from another.
//!
//! ServiceAccounts and Namespaces: the `v1` objects among the YAML of the
//! File-registry directory Pilot reads (`--configDir`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Accounts, CA_ROOT, CERT_CHAIN, KEY, KEY_AND_CERT, Secret, SecretStore, StoreError};
use crate::authority::selfsigned;
use crate::identity::Identity;

pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: PathBuf) -> DirStore {
        DirStore { root }
    }

    fn path(&self, namespace: &str, name: &str) -> Result<PathBuf, StoreError> {
        let plain = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.contains('/');
        if !plain(namespace) || !plain(name) {
            return Err(StoreError::new(
                namespace,
                name,
                "not a name a directory may have",
            ));
        }
        Ok(self.root.join(namespace).join(name))
    }

    fn read(&self, namespace: &str, name: &str) -> Result<Option<Secret>, StoreError> {
        let dir = self.path(namespace, name)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::new(namespace, name, e)),
        };
        let mut data = BTreeMap::new();
        for entry in entries.flatten() {
            let key = entry.file_name().to_string_lossy().to_string();
            if key.starts_with('.') {
                continue;
            }
            match std::fs::read(entry.path()) {
                Ok(bytes) => {
                    data.insert(key, bytes);
                }
                // A link whose target went in a concurrent swap.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::new(namespace, name, format!("{key}: {e}"))),
            }
        }
        // Files carry no type: the keys tell which Secret this is.
        let kind = if data.contains_key(selfsigned::CA_CERT) {
            CA_ROOT
        } else if data.contains_key(CERT_CHAIN) && data.contains_key(KEY) {
            KEY_AND_CERT
        } else {
            "Opaque"
        };
        Ok(Some(Secret {
            namespace: namespace.to_string(),
            name: name.to_string(),
            kind: kind.to_string(),
            annotations: BTreeMap::new(),
            data,
        }))
    }

    fn write(&self, secret: &Secret) -> Result<(), StoreError> {
        let fail = |e: std::io::Error| StoreError::new(&secret.namespace, &secret.name, e);
        let dir = self.path(&secret.namespace, &secret.name)?;
        std::fs::create_dir_all(&dir).map_err(fail)?;
        let stamp = format!(
            "..{}_{:08x}",
            time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
            rand::random::<u32>()
        );
        let fresh = dir.join(&stamp);
        std::fs::create_dir(&fresh).map_err(fail)?;
        for (key, value) in &secret.data {
            if key.starts_with('.') || key.contains('/') {
                return Err(StoreError::new(
                    &secret.namespace,
                    &secret.name,
                    format!("data key {key:?} cannot be a file name"),
                ));
            }
            write_private(&fresh.join(key), value).map_err(fail)?;
        }
        let previous = std::fs::read_link(dir.join("..data")).ok();
        let staged = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(&stamp, &staged).map_err(fail)?;
        std::fs::rename(&staged, dir.join("..data")).map_err(fail)?;
        for key in secret.data.keys() {
            let link = dir.join(key);
            if std::fs::read_link(&link).is_err() {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(Path::new("..data").join(key), &link).map_err(fail)?;
            }
        }
        // Keys this version no longer has.
        for entry in std::fs::read_dir(&dir).map_err(fail)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !name.starts_with('.') && !secret.data.contains_key(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        if let Some(old) = previous.filter(|p| p != Path::new(&stamp)) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
        Ok(())
    }
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[async_trait::async_trait]
impl SecretStore for DirStore {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Secret>, StoreError> {
        self.read(namespace, name)
    }

    async fn list(&self, kind: &str) -> Result<Vec<Secret>, StoreError> {
        let mut out = Vec::new();
        let Ok(namespaces) = std::fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for ns in namespaces.flatten().filter(|e| e.path().is_dir()) {
            let namespace = ns.file_name().to_string_lossy().to_string();
            if namespace.starts_with('.') {
                continue;
            }
            for secret in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let name = secret.file_name().to_string_lossy().to_string();
                if name.starts_with('.') || !secret.path().is_dir() {
                    continue;
                }
                if let Some(s) = self.read(&namespace, &name)?.filter(|s| s.kind == kind) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    async fn put(&self, secret: &Secret) -> Result<(), StoreError> {
        self.write(secret)
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        match std::fs::remove_dir_all(self.path(namespace, name)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::new(namespace, name, e))
            }
            _ => Ok(()),
        }
    }
}

/// The ServiceAccounts and Namespaces under `dir`, and what was wrong with
/// those that could not be read (other documents are someone else's).
pub fn load_accounts(dir: &Path) -> (Accounts, Vec<String>) {
    let (docs, listing) = mesh::dir::v1_objects(dir, &["ServiceAccount", "Namespace"]);
    let mut errors: Vec<String> = listing.iter().map(ToString::to_string).collect();
    let mut accounts = Accounts::default();
    for doc in docs {
        if doc.kind == "Namespace" {
            match doc.typed::<Namespace>() {
                Ok(ns) => {
                    let labels = ns.metadata.labels.unwrap_or_default();
                    let name = ns.metadata.name.unwrap_or_default();
                    accounts
                        .namespaces
                        .insert(name, labels.into_iter().collect());
                }
                Err(e) => errors.push(e),
            }
            continue;
        }
        match doc.typed::<ServiceAccount>() {
            Ok(sa) => match sa.metadata.name.filter(|n| !n.is_empty()) {
                Some(name) => {
                    let namespace = sa.metadata.namespace.unwrap_or_else(|| "default".into());
                    accounts
                        .service_accounts
                        .insert(Identity::new(namespace, name));
                }
                None => errors.push(format!(
                    "{}: ServiceAccount: metadata.name: missing",
                    doc.path.display()
                )),
            },
            Err(e) => errors.push(e),
        }
    }
    (accounts, errors)
}

/// Publishes the accounts under `dir` on every change until `shutdown`.
pub async fn watch_accounts(
    dir: PathBuf,
    out: watch::Sender<Arc<Accounts>>,
    shutdown: CancellationToken,
) -> Result<(), notify::Error> {
    // The first read is published even when empty: it is what the
    // controller waits for.
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    mesh::dir::on_changes(&dir.clone(), shutdown, || {
        let dir = dir.clone();
        let out = out.clone();
        let first = first.clone();
        async move {
            match tokio::task::spawn_blocking(move || load_accounts(&dir)).await {
                Ok((accounts, errors)) => {
                    for e in &errors {
                        tracing::warn!("{e}");
                    }
                    out.send_if_modified(|current| {
                        let changed = first.swap(false, std::sync::atomic::Ordering::Relaxed)
                            || **current != accounts;
                        if changed {
                            tracing::info!(
                                service_accounts = accounts.service_accounts.len(),
                                namespaces = accounts.namespaces.len(),
                                "ServiceAccounts read"
                            );
                            *current = Arc::new(accounts);
                        }
                        changed
                    });
                }
                Err(e) => tracing::error!("reading ServiceAccounts failed: {e}"),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            namespace: "default".into(),
            name: "istio.reviews".into(),
            kind: KEY_AND_CERT.into(),
            annotations: BTreeMap::new(),
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[tokio::test]
    async fn secrets_are_swapped_whole_as_the_kubelet_mounts_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path().to_path_buf());
        assert_eq!(store.get("default", "istio.reviews").await.unwrap(), None);
        let first = secret(&[(CERT_CHAIN, "chain-1"), (KEY, "key-1"), ("extra", "x")]);
        store.put(&first).await.unwrap();
        let home = dir.path().join("default/istio.reviews");
        assert_eq!(std::fs::read_to_string(home.join(KEY)).unwrap(), "key-1");
        assert!(
            std::fs::read_link(home.join(KEY)).is_ok(),
            "a link into ..data"
        );
        let second = secret(&[(CERT_CHAIN, "chain-2"), (KEY, "key-2")]);
        store.put(&second).await.unwrap();
        assert_eq!(
            store.get("default", "istio.reviews").await.unwrap(),
            Some(second.clone())
        );
        assert!(!home.join("extra").exists(), "a dropped key goes");
        let versions = std::fs::read_dir(&home)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with("..2")
                    || e.file_name().to_string_lossy().starts_with("..1")
            })
            .count();
        assert_eq!(versions, 1, "the old version is removed");
        assert_eq!(store.list(KEY_AND_CERT).await.unwrap(), [second]);
        assert!(store.list(CA_ROOT).await.unwrap().is_empty());
        store.delete("default", "istio.reviews").await.unwrap();
        store.delete("default", "istio.reviews").await.unwrap();
        assert!(!home.exists());
        let e = store.get("..", "x").await.unwrap_err();
        assert!(e.to_string().starts_with("Secret ../x"), "{e}");
    }

    #[test]
    fn service_accounts_and_namespace_labels_come_from_the_yaml() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cluster.yaml"),
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: bookinfo-reviews}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: cart, namespace: shop}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: legacy, labels: {ca.istio.io/override: \"false\"}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: broken, labels: 7}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: reviews}\n",
        )
        .unwrap();
        let (accounts, errors) = load_accounts(dir.path());
        assert_eq!(
            accounts.service_accounts,
            BTreeSet::from([
                Identity::new("default", "bookinfo-reviews"),
                Identity::new("shop", "cart")
            ])
        );
        assert_eq!(
            accounts.namespaces["legacy"]["ca.istio.io/override"],
            "false"
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("ServiceAccount broken: metadata.labels"),
            "{errors:?}"
        );
    }
}
