//! ADS streams: one task per stream doing the I/O around a [`Connection`]
//! (the gRPC transport is in [`crate::xds::server::grpc`]). Pushes arrive through a `watch`
//! of the latest push context, so a stream that falls behind skips straight to
//! the newest state.

mod blame;
pub mod connection;
pub mod grpc;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use api::xds::{DiscoveryRequest, DiscoveryResponse};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::xds::generate::Generators;
use crate::xds::metrics::XdsMetrics;
use crate::xds::push::PushContext;
use crate::xds::resource::XdsType;
use crate::xds::server::connection::{Connection, RequestKind, WatchState};

/// What `/debug/syncz` and `/debug/adsz` show for one stream.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStatus {
    pub proxy: String,
    pub peer: String,
    pub connected_at: u64,
    pub push_version: u64,
    pub watches: BTreeMap<XdsType, WatchState>,
}

pub type Clients = Arc<Mutex<BTreeMap<u64, ClientStatus>>>;

#[derive(Clone)]
pub struct DiscoveryServer {
    push: watch::Receiver<Arc<PushContext>>,
    clients: Clients,
    metrics: XdsMetrics,
    shutdown: CancellationToken,
    next_id: Arc<AtomicU64>,
    throttle: Arc<Semaphore>,
    ready: watch::Receiver<bool>,
    generators: Arc<Generators>,
}

impl DiscoveryServer {
    /// `throttle` bounds how many streams generate and send at once (Istio's
    /// `PILOT_PUSH_THROTTLE`): each full response is megabytes once encoded, so a
    /// reconnect storm must not encode them all at the same time.
    pub fn new(
        push: watch::Receiver<Arc<PushContext>>,
        ready: watch::Receiver<bool>,
        metrics: XdsMetrics,
        shutdown: CancellationToken,
        throttle: usize,
    ) -> Self {
        DiscoveryServer {
            push,
            clients: Clients::default(),
            metrics,
            shutdown,
            next_id: Arc::default(),
            throttle: Arc::new(Semaphore::new(throttle.max(1))),
            ready,
            generators: Generators::standard(),
        }
    }

    /// Serves with `generators` instead of the standard set (a new xDS type,
    /// or one generated differently).
    pub fn with_generators(mut self, generators: Arc<Generators>) -> DiscoveryServer {
        self.generators = generators;
        self
    }

    pub fn clients(&self) -> Clients {
        self.clients.clone()
    }
}

/// Longest a stream holds its throttle permit waiting for gRPC to take its
/// responses.
const SEND_UNDER_PERMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Responses queued per stream. Small on purpose: pushes are generated from the
/// newest state when there is room, so a slow proxy never holds old pushes.
const STREAM_QUEUE: usize = 4;

impl DiscoveryServer {
    /// Starts serving one ADS stream; returns the responses to send.
    pub fn open_stream(
        &self,
        peer: String,
        requests: Streaming<DiscoveryRequest>,
    ) -> mpsc::Receiver<Result<DiscoveryResponse, Status>> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stream = StreamTask {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer,
            push: self.push.clone(),
            clients: self.clients.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            throttle: self.throttle.clone(),
            ready: self.ready.clone(),
            conn: Connection::with_generators(self.generators.clone()),
        };
        tokio::spawn(stream.run(requests, tx));
        rx
    }
}

struct StreamTask {
    id: u64,
    peer: String,
    push: watch::Receiver<Arc<PushContext>>,
    clients: Clients,
    metrics: XdsMetrics,
    shutdown: CancellationToken,
    throttle: Arc<Semaphore>,
    ready: watch::Receiver<bool>,
    conn: Connection,
}

impl StreamTask {
    async fn run(
        mut self,
        mut inbound: Streaming<DiscoveryRequest>,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) {
        self.metrics.connected.inc();
        let outcome = self.serve(&mut inbound, &tx).await;
        if let Err(status) = outcome {
            tracing::warn!(peer = %self.peer, proxy = ?self.proxy_id(), %status, "closing ADS stream");
            let _ = tx.send(Err(status)).await;
        }
        self.metrics.connected.dec();
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        tracing::info!(peer = %self.peer, proxy = ?self.proxy_id(), "ADS stream closed");
    }

    fn proxy_id(&self) -> Option<&str> {
        self.conn.proxy.as_ref().map(|p| p.id.as_str())
    }

    async fn serve(
        &mut self,
        inbound: &mut Streaming<DiscoveryRequest>,
        tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) -> Result<(), Status> {
        // Until the registries and config have synced the push context is
        // empty: an Envoy reconnecting to a restarted Pilot must wait (its
        // requests queue in the stream) rather than be told the mesh is empty.
        tokio::select! {
            _ = self.shutdown.cancelled() => return Ok(()),
            synced = self.ready.wait_for(|r| *r) => if synced.is_err() { return Ok(()) },
        }
        self.push.borrow_and_update();
        loop {
            let (permit, responses) = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                request = inbound.next() => {
                    let request = match request {
                        None => return Ok(()),
                        Some(Err(status)) => {
                            // A reset stream or an undecodable request: the status
                            // goes back in the trailers if the client is still there.
                            tracing::debug!(peer = %self.peer, %status, "ADS stream failed");
                            return Err(status);
                        }
                        Some(Ok(r)) => r,
                    };
                    let permit = self.throttle.clone().acquire_owned().await;
                    let push = self.push.borrow().clone();
                    let type_url = request.type_url.clone();
                    let first = self.conn.proxy.is_none();
                    let (kind, response) = self
                        .conn
                        .on_request(request, &push)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                    if first {
                        tracing::info!(peer = %self.peer, proxy = ?self.proxy_id(), "ADS stream connected");
                    }
                    self.observe(&type_url, &kind);
                    self.publish_status(&push);
                    (permit, Vec::from_iter(response))
                }
                changed = self.push.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let permit = self.throttle.clone().acquire_owned().await;
                    let push = self.push.borrow_and_update().clone();
                    let started = Instant::now();
                    let responses = self.conn.on_push(&push);
                    self.metrics.push_time.observe(started.elapsed().as_secs_f64());
                    self.publish_status(&push);
                    (permit, responses)
                }
            };
            self.send_all(tx, responses, permit.ok()).await?;
        }
    }

    /// Sends `responses` holding the throttle `permit` until gRPC has taken
    /// them for encoding, so that only so many streams buffer a large push at
    /// once, but never longer than [`SEND_UNDER_PERMIT`]: a proxy that stops
    /// reading then lets the permit go and blocks only its own stream.
    async fn send_all(
        &self,
        tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
        responses: Vec<DiscoveryResponse>,
        mut permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), Status> {
        if responses.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + SEND_UNDER_PERMIT;
        for response in responses {
            if permit.is_some() {
                match tokio::time::timeout_at(deadline, tx.reserve()).await {
                    Ok(Ok(slot)) => {
                        self.count_push(&response);
                        slot.send(Ok(response));
                        continue;
                    }
                    Ok(Err(_)) => return Err(Status::cancelled("client went away")),
                    Err(_) => permit = None,
                }
            }
            self.send(tx, response).await?;
        }
        if permit.is_some() {
            let _ = tokio::time::timeout_at(deadline, tx.reserve_many(tx.max_capacity())).await;
        }
        Ok(())
    }

    fn count_push(&self, response: &DiscoveryResponse) {
        let short = XdsType::from_url(&response.type_url)
            .map(XdsType::short)
            .unwrap_or("unknown");
        self.metrics
            .pushes
            .get_or_create(&vec![("type", short.to_string())])
            .inc();
    }

    async fn send(
        &self,
        tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
        response: DiscoveryResponse,
    ) -> Result<(), Status> {
        self.count_push(&response);
        tx.send(Ok(response))
            .await
            .map_err(|_| Status::cancelled("client went away"))
    }

    fn observe(&self, type_url: &str, kind: &RequestKind) {
        let short = XdsType::from_url(type_url)
            .map(XdsType::short)
            .unwrap_or("unknown");
        match kind {
            RequestKind::Nack(message) => {
                let objects = XdsType::from_url(type_url)
                    .and_then(|k| self.conn.watches.get(&k))
                    .map(|w| w.nack_objects.join(", "))
                    .unwrap_or_default();
                tracing::warn!(proxy = ?self.proxy_id(), r#type = short, %message, %objects, "proxy rejected config (NACK)");
                self.metrics
                    .rejects
                    .get_or_create(&vec![("type", short.to_string())])
                    .inc();
            }
            RequestKind::Ack {
                converged_in: Some(d),
            } => self.metrics.convergence.observe(d.as_secs_f64()),
            RequestKind::Unknown => {
                tracing::debug!(proxy = ?self.proxy_id(), type_url, "ignoring request for a type not served over ADS")
            }
            _ => {}
        }
    }

    fn publish_status(&self, push: &PushContext) {
        let Some(proxy) = &self.conn.proxy else {
            return;
        };
        let status = ClientStatus {
            proxy: proxy.id.clone(),
            peer: self.peer.clone(),
            connected_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            push_version: push.version,
            watches: self.conn.watches.clone(),
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let connected_at = clients.get(&self.id).map(|c| c.connected_at);
        clients.insert(
            self.id,
            ClientStatus {
                connected_at: connected_at.unwrap_or(status.connected_at),
                ..status
            },
        );
    }
}
