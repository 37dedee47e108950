//! The MCP source: `istio.mcp.v1alpha1.ResourceSource/EstablishResourceStream`,
//! the only MCP service Istio 1.2–1.4's Galley offered. Sinks (Pilot,
//! Mixer) dial in, ask for collections, and get each collection's snapshot
//! again whenever it changes ([`stream`] holds the protocol's rules).

pub mod stream;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use api::mcp::v1alpha1::resource_source_server::ResourceSource;
use api::mcp::v1alpha1::{RequestResources, Resources};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::{Metrics, labels};
use crate::snapshot::Snapshot;
use stream::{Answer, Stream};

pub use api::mcp::v1alpha1::resource_source_server::ResourceSourceServer;

#[derive(Clone)]
pub struct Source {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// True once the config source has loaded: until then a sink's
    /// requests wait, so a restarted Galley never pushes an empty config
    /// over the one its sinks hold.
    synced: watch::Receiver<bool>,
    metrics: Metrics,
    access: Option<Arc<AccessList>>,
    shutdown: CancellationToken,
}

impl Source {
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        synced: watch::Receiver<bool>,
        metrics: Metrics,
        access: Option<AccessList>,
        shutdown: CancellationToken,
    ) -> Source {
        Source {
            snapshots,
            synced,
            metrics,
            access: access.map(Arc::new),
            shutdown,
        }
    }

    pub fn into_server(self) -> ResourceSourceServer<Source> {
        // Ten thousand resources in one push are a few megabytes; a sink's
        // requests stay within the default 4 MiB.
        ResourceSourceServer::new(self).max_encoding_message_size(1 << 30)
    }
}

/// `--accessListFile`: the SPIFFE identities allowed to connect over mutual
/// TLS, as Istio wrote it (`allowed: [spiffe://cluster.local/ns/…/sa/…]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessList {
    #[serde(default)]
    pub allowed: BTreeSet<String>,
}

impl AccessList {
    pub fn load(path: &Path) -> Result<AccessList, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text))
            .map_err(|e| format!("{}: {}: {}", path.display(), e.path(), e.inner()))
    }

    fn admits<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let leaf = request
            .peer_certs()
            .and_then(|certs| certs.first().cloned())
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let ids = spiffe_ids(leaf.as_ref());
        if ids.iter().any(|id| self.allowed.contains(id)) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "{} is not in the access list",
            ids.first()
                .map(String::as_str)
                .unwrap_or("a certificate without a SPIFFE identity")
        )))
    }
}

fn spiffe_ids(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(names)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
                Some(u.to_string())
            }
            _ => None,
        })
        .collect()
}

#[tonic::async_trait]
impl ResourceSource for Source {
    type EstablishResourceStreamStream = ReceiverStream<Result<Resources, Status>>;

    async fn establish_resource_stream(
        &self,
        request: Request<Streaming<RequestResources>>,
    ) -> Result<Response<Self::EstablishResourceStreamStream>, Status> {
        if let Some(access) = &self.access {
            access.admits(&request)?;
        }
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            this.metrics.clients.inc();
            tracing::info!(%peer, "MCP sink connected");
            let why = this.serve(request.into_inner(), tx).await;
            this.metrics.clients.dec();
            tracing::info!(%peer, "MCP sink gone: {why}");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Out = mpsc::Sender<Result<Resources, Status>>;

impl Source {
    /// Runs one stream until the sink or Galley ends it; says why.
    async fn serve(&self, mut inbound: Streaming<RequestResources>, out: Out) -> String {
        let mut synced = self.synced.clone();
        tokio::select! {
            _ = self.shutdown.cancelled() => return "Galley is shutting down".into(),
            s = synced.wait_for(|s| *s) => if s.is_err() { return "the config source stopped".into() },
        }
        let mut snapshots = self.snapshots.clone();
        let mut stream = Stream::default();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return "Galley is shutting down".into(),
                request = inbound.message() => {
                    let request = match request {
                        Ok(Some(r)) => r,
                        Ok(None) => return "the sink closed the stream".into(),
                        Err(e) => return format!("receive failed: {e}"),
                    };
                    let sink = request.sink_node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
                    let collection = request.collection.clone();
                    // Not marked seen: a change this request's push does not
                    // carry still wakes the other branch for the collections
                    // it touched.
                    let snapshot = snapshots.borrow().clone();
                    match stream.on_request(request, &snapshot) {
                        Ok((answer, push)) => {
                            self.count(&answer, &collection, &sink);
                            if let Some(push) = push
                                && !self.send(&out, push).await
                            {
                                return "the sink stopped reading".into();
                            }
                        }
                        Err(status) => {
                            let why = status.message().to_string();
                            let _ = out.send(Err(status)).await;
                            return why;
                        }
                    }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return "the config source stopped".into();
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    for push in stream.on_snapshot(&snapshot) {
                        if !self.send(&out, push).await {
                            return "the sink stopped reading".into();
                        }
                    }
                }
            }
        }
    }

    /// False when the sink is gone, or Galley is stopping while the sink
    /// does not read (graceful shutdown must not wait on it).
    async fn send(&self, out: &Out, push: Resources) -> bool {
        self.metrics
            .pushes
            .get_or_create(&labels(&[("collection", &push.collection)]))
            .inc();
        tracing::debug!(collection = %push.collection, nonce = %push.nonce, resources = push.resources.len(), "push");
        tokio::select! {
            sent = out.send(Ok(push)) => sent.is_ok(),
            _ = self.shutdown.cancelled() => false,
        }
    }

    fn count(&self, answer: &Answer, collection: &str, sink: &str) {
        match answer {
            Answer::Ack => {
                self.metrics
                    .acks
                    .get_or_create(&labels(&[("collection", collection)]))
                    .inc();
            }
            Answer::Nack(why) => {
                self.metrics
                    .nacks
                    .get_or_create(&labels(&[("collection", collection)]))
                    .inc();
                tracing::warn!(%sink, %collection, "sink refused a push: {why}");
            }
            Answer::Subscribed => tracing::debug!(%sink, %collection, "subscribed"),
            Answer::Stale => {}
        }
    }
}
