//! The Secrets Citadel keeps: `istio.<sa>` (type `istio.io/key-and-cert`)
//! for every ServiceAccount of a managed namespace, and the self-signed
//! root's `istio-ca-secret` (type `istio.io/ca-root`).
//!
//! Where they live is a [`SecretStore`]: Kubernetes Secrets through kube-rs,
//! or, locally, a directory per Secret laid out as the kubelet mounts one
//! ([`dir`]). Which ServiceAccounts exist comes from an [`Accounts`] source
//! of either kind; the [`controller`] reconciles the two.

pub mod controller;
pub mod dir;
pub mod kube;

use std::collections::{BTreeMap, BTreeSet};

use crate::identity::Identity;

pub const KEY_AND_CERT: &str = "istio.io/key-and-cert";
pub const CA_ROOT: &str = "istio.io/ca-root";
/// The annotation naming the ServiceAccount a Secret is for.
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "istio.io/service-account.name";
pub const CERT_CHAIN: &str = "cert-chain.pem";
pub const KEY: &str = "key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
/// Where the self-signed root is kept, in the storage namespace.
pub const CA_SECRET: &str = "istio-ca-secret";

/// A Secret as Citadel reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub namespace: String,
    pub name: String,
    /// The Secret's `type`.
    pub kind: String,
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error("Secret {namespace}/{name}: {message}")]
pub struct StoreError {
    pub namespace: String,
    pub name: String,
    pub message: String,
}

impl StoreError {
    pub fn new(namespace: &str, name: &str, message: impl ToString) -> StoreError {
        StoreError {
            namespace: namespace.to_string(),
            name: name.to_string(),
            message: message.to_string(),
        }
    }
}

/// Where Secrets live. Every call is one round trip; the controller lists
/// once per pass rather than reading Secret by Secret.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Secret>, StoreError>;
    /// Every Secret of type `kind`, in every namespace.
    async fn list(&self, kind: &str) -> Result<Vec<Secret>, StoreError>;
    /// Creates or replaces.
    async fn put(&self, secret: &Secret) -> Result<(), StoreError>;
    /// Deleting what is not there is not an error.
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), StoreError>;
}

/// The labels that opt a namespace in or out (Istio 1.4's namespace
/// targeting): `ca.istio.io/override` decides when set; otherwise
/// `ca.istio.io/env` names the Citadel (by its storage namespace) that
/// manages it; otherwise `CITADEL_ENABLE_NAMESPACES_BY_DEFAULT`.
pub const OVERRIDE_LABEL: &str = "ca.istio.io/override";
pub const ENV_LABEL: &str = "ca.istio.io/env";

/// The cluster as the controller needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub service_accounts: BTreeSet<Identity>,
    /// Each known namespace's labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl Accounts {
    pub fn managed(&self, namespace: &str, storage_namespace: &str, by_default: bool) -> bool {
        let labels = self.namespaces.get(namespace);
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        match (label(OVERRIDE_LABEL), label(ENV_LABEL)) {
            (Some(o), _) => o == "true",
            (None, Some(env)) => env == storage_namespace,
            (None, None) => by_default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_labels_opt_in_and_out() {
        let mut a = Accounts::default();
        let ns = |labels: &[(&str, &str)]| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        a.namespaces
            .insert("off".into(), ns(&[(OVERRIDE_LABEL, "false")]));
        a.namespaces.insert(
            "forced".into(),
            ns(&[(OVERRIDE_LABEL, "true"), (ENV_LABEL, "elsewhere")]),
        );
        a.namespaces
            .insert("ours".into(), ns(&[(ENV_LABEL, "istio-system")]));
        a.namespaces
            .insert("theirs".into(), ns(&[(ENV_LABEL, "other-ca")]));
        assert!(!a.managed("off", "istio-system", true));
        assert!(a.managed("forced", "istio-system", false));
        assert!(a.managed("ours", "istio-system", false));
        assert!(!a.managed("theirs", "istio-system", true));
        assert!(a.managed("unlabelled", "istio-system", true));
        assert!(!a.managed("unlabelled", "istio-system", false));
    }
}
