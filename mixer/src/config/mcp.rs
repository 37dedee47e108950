//! `--configStoreURL mcp://host:port`: Mixer's kinds from Galley over MCP.
//! Mixer serves from its first (empty, or built-in) snapshot at once and is
//! not ready until Galley has pushed every collection; it never waits on
//! Galley to answer a request (Istio 1.x hung "awaiting config store sync").
//! When Galley goes away the last snapshot stays in force.

use std::sync::Arc;

use mesh::mcp::{Sink, State};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::store::{self, Base, Current};
use super::{Object, Snapshot};
use crate::adapter::Registry;

/// Mixer's objects in what Galley pushed.
pub fn objects(state: &State) -> Vec<Object> {
    state
        .values()
        .flat_map(|c| c.values())
        .map(|o| Object {
            kind: o.collection.kind.to_string(),
            name: o.name.clone(),
            namespace: o.namespace.clone(),
            spec: o.document.get("spec").cloned().unwrap_or_default(),
            source: format!("mcp {}", o.collection.name),
        })
        .collect()
}

/// Follows `address` until `shutdown`, rebuilding `current` on each push;
/// `synced` turns true at the first complete one.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    address: String,
    tls: Option<mesh::tls::MountedCerts>,
    base: Base,
    adapters: Registry,
    current: Current,
    on_change: impl Fn(&Snapshot) + Send + Sync + 'static,
    synced: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = watch::channel(None::<Arc<State>>);
    let sink = Sink {
        address: address.clone(),
        node_id: "mixer".into(),
        collections: api::mcp::mixer_collections().collect(),
        tls,
    };
    tokio::spawn(sink.run(tx, shutdown.clone()));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let Some(state) = rx.borrow_and_update().clone() else {
            continue;
        };
        let previous = current.get();
        let adapters = adapters.clone();
        let base = base.clone();
        let built = tokio::task::spawn_blocking(move || {
            let (objects, errors) = base.under((objects(&state), Vec::new()));
            Snapshot::build(&objects, errors, &previous, &adapters)
        })
        .await;
        match built {
            Ok(snapshot) => {
                store::log(&snapshot);
                on_change(&snapshot);
                current.set(snapshot);
                if !*synced.borrow() {
                    tracing::info!(%address, "config synced from MCP");
                    synced.send_replace(true);
                }
            }
            Err(e) => tracing::error!("config rebuild failed: {e}"),
        }
    }
}
