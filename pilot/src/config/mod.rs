//! Istio config as Pilot holds it: a snapshot of every accepted object, from
//! one [`ConfigSource`]: the directory (`--configDir`, [`dir`]), or Galley
//! over MCP when the mesh config's `configSources` name it ([`mcp`]).

pub mod dir;
pub mod mcp;
pub mod policy;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use api::config::{ConfigError, ConfigObject, Kind, Spec};
use api::networking::{ServiceEntry, Sidecar};
use api::security::{AuthenticationPolicy, AuthorizationPolicy};
use serde::Serialize;

/// A rejected object and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub file: String,
    #[serde(flatten)]
    pub error: ConfigError,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.error)
    }
}

/// Every accepted config object, by kind then `namespace/name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConfigSnapshot {
    pub objects: BTreeMap<Kind, BTreeMap<String, Arc<ConfigObject>>>,
    /// Namespaces where some Mixer policy can apply: those with a `rule`,
    /// and those of services a `QuotaSpecBinding` binds. Mixer reads the
    /// rules themselves; Pilot only leaves the check out where none can apply.
    pub policy_namespaces: std::collections::BTreeSet<String>,
}

impl ConfigSnapshot {
    pub fn insert(&mut self, obj: Arc<ConfigObject>) -> Option<Arc<ConfigObject>> {
        let key = format!("{}/{}", obj.meta.namespace, obj.meta.name);
        self.objects.entry(obj.kind).or_default().insert(key, obj)
    }

    fn of(&self, kind: Kind) -> impl Iterator<Item = &Arc<ConfigObject>> {
        self.objects.get(&kind).into_iter().flat_map(|m| m.values())
    }

    pub fn service_entries(&self) -> impl Iterator<Item = (&ConfigObject, &ServiceEntry)> {
        self.of(Kind::ServiceEntry).filter_map(|o| match &o.spec {
            Spec::ServiceEntry(s) => Some((o.as_ref(), s)),
            _ => None,
        })
    }

    pub fn sidecars(&self) -> impl Iterator<Item = (&ConfigObject, &Sidecar)> {
        self.of(Kind::Sidecar).filter_map(|o| match &o.spec {
            Spec::Sidecar(s) => Some((o.as_ref(), s)),
            _ => None,
        })
    }

    /// Every `Policy`, then the `MeshPolicy`.
    pub fn authentication_policies(
        &self,
    ) -> impl Iterator<Item = (&ConfigObject, &AuthenticationPolicy)> {
        self.of(Kind::Policy)
            .chain(self.of(Kind::MeshPolicy))
            .filter_map(|o| match &o.spec {
                Spec::Authentication(p) => Some((o.as_ref(), p)),
                _ => None,
            })
    }

    pub fn authorization_policies(
        &self,
    ) -> impl Iterator<Item = (&ConfigObject, &AuthorizationPolicy)> {
        self.of(Kind::AuthorizationPolicy)
            .filter_map(|o| match &o.spec {
                Spec::AuthorizationPolicy(p) => Some((o.as_ref(), p)),
                _ => None,
            })
    }

    pub fn len(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where Istio config comes from. `run` publishes the whole snapshot on every
/// change (`None` until the source has synced once) and returns when
/// `shutdown` fires. Pilot serves nothing until its source has synced.
pub trait ConfigSource: Send + 'static {
    fn name(&self) -> &'static str;
    fn run(
        self: Box<Self>,
        out: watch::Sender<Option<Arc<ConfigSnapshot>>>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// No config at all (no `--configDir`): synced at once, and empty.
pub struct NoConfig;

impl ConfigSource for NoConfig {
    fn name(&self) -> &'static str {
        "none"
    }

    fn run(
        self: Box<Self>,
        out: watch::Sender<Option<Arc<ConfigSnapshot>>>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        out.send_replace(Some(Arc::default()));
        async move {
            shutdown.cancelled().await;
            Ok(())
        }
        .boxed()
    }
}
