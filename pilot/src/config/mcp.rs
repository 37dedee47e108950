//! Galley as Pilot's config source: the mesh config's `configSources`
//! name it (`address: istio-galley.istio-system.svc:9901`), and Pilot reads
//! its kinds over MCP, plus the Mixer rules and instances that tell it
//! where policy checks apply.
//!
//! Pilot serves nothing until every source has pushed once; after that,
//! a source going away keeps its last config in force until it returns.

use std::sync::Arc;

use api::config::{Document, Kind, OtherDocument};
use api::mcp::Collection;
use api::mesh::ConfigSourceAddress;
use futures::FutureExt;
use futures::future::BoxFuture;
use mesh::mcp::{Sink, State};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::policy::MixerObjects;
use super::{ConfigSnapshot, ConfigSource};

pub struct McpSource {
    sources: Vec<ConfigSourceAddress>,
    /// Pilot's own certificates, for sources with `ISTIO_MUTUAL`.
    cert_dir: std::path::PathBuf,
    node_id: String,
}

impl McpSource {
    pub fn new(
        sources: Vec<ConfigSourceAddress>,
        cert_dir: std::path::PathBuf,
        node_id: String,
    ) -> McpSource {
        McpSource {
            sources,
            cert_dir,
            node_id,
        }
    }
}

/// What Pilot asks Galley for: its own kinds, and Mixer's rules and the
/// instances they name.
pub fn collections() -> Vec<&'static Collection> {
    let pilot = Kind::ALL.iter().filter_map(|k| {
        let api_version = format!("{}/{}", k.group(), k.versions()[0]);
        api::mcp::collection_of(&api_version, k.name())
    });
    let mixer = api::mcp::mixer_collections().filter(|c| {
        c.kind == "rule"
            || c.kind == "instance"
            || mixer::template::Template::parse(c.kind).is_some()
    });
    pilot.chain(mixer).collect()
}

impl ConfigSource for McpSource {
    fn name(&self) -> &'static str {
        "mcp"
    }

    fn run(
        self: Box<Self>,
        out: watch::Sender<Option<Arc<ConfigSnapshot>>>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        async move {
            let mut states = Vec::new();
            for source in &self.sources {
                let (tx, rx) = watch::channel(None);
                let tls = source.mutual_tls();
                let sink = Sink {
                    address: source.address.clone(),
                    node_id: self.node_id.clone(),
                    collections: collections(),
                    tls: tls.then(|| mesh::tls::MountedCerts::in_dir(&self.cert_dir)),
                };
                tracing::info!(address = %source.address, mutual_tls = tls, "reading config from MCP");
                tokio::spawn(sink.run(tx, shutdown.clone()));
                states.push(rx);
            }
            loop {
                let current: Option<Vec<Arc<State>>> = states
                    .iter_mut()
                    .map(|s| s.borrow_and_update().clone())
                    .collect();
                if let Some(all) = current {
                    // Parsing every object again is blocking work.
                    let snapshot = tokio::task::spawn_blocking(move || snapshot(&all)).await?;
                    out.send_if_modified(|published| {
                        let changed = published.as_deref() != Some(&snapshot);
                        if changed {
                            *published = Some(Arc::new(snapshot));
                        }
                        changed
                    });
                }
                let changes = states.iter_mut().map(|s| s.changed().boxed());
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = futures::future::select_all(changes) => {}
                }
            }
        }
        .boxed()
    }
}

/// Pilot's view of what the sources pushed. Galley validated every object
/// already; one Pilot still refuses (a version skew) is logged and left out.
fn snapshot(states: &[Arc<State>]) -> ConfigSnapshot {
    let mut snapshot = ConfigSnapshot::default();
    let mut mixer = MixerObjects::default();
    for object in states
        .iter()
        .flat_map(|s| s.values().flat_map(|c| c.values()))
    {
        let label = format!(
            "{} {}/{}",
            object.collection.kind, object.namespace, object.name
        );
        if object.collection.api_version == "config.istio.io/v1alpha2" {
            mixer.note(&OtherDocument {
                api_version: object.collection.api_version.to_string(),
                kind: object.collection.kind.to_string(),
                value: object.document.clone(),
            });
            continue;
        }
        let parsed = serde_yaml::to_value(&object.document)
            .map_err(|e| e.to_string())
            .and_then(|v| api::config::parse_value(v, &label).map_err(|e| e.to_string()));
        match parsed {
            Ok(Document::Config(o)) => {
                snapshot.insert(Arc::from(o));
            }
            Ok(Document::Other(_)) => {}
            Err(e) => tracing::warn!(object = %label, "pushed config refused: {e}"),
        }
    }
    snapshot.policy_namespaces = mixer.policy_namespaces();
    snapshot
}
