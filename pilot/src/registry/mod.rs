//! Service registries: where Pilot learns which services and endpoints exist.
//!
//! Both adapters — [`file`] (a directory of Kubernetes-shaped YAML) and
//! [`kubernetes`] (kube-rs watchers against an API server) — produce the same
//! thing, a [`ClusterState`] of Kubernetes objects, and one conversion turns that
//! into Pilot's [`ServiceModel`](crate::model::ServiceModel). Only the transport
//! differs, so the conversion is tested once for both.

pub mod file;
pub mod kubernetes;
pub mod state;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use state::ClusterState;

/// A source of cluster state. `run` publishes the whole state on every change
/// (`None` until the first full sync) and returns when `shutdown` fires.
pub trait ServiceRegistry: Send + 'static {
    fn name(&self) -> &'static str;
    fn run(
        self: Box<Self>,
        out: watch::Sender<Option<Arc<ClusterState>>>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>>;
}
