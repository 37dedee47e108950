//! One ADS stream as a state machine with no I/O: fed requests (first
//! requests, ACKs, NACKs) and pushes, it returns the responses to send. The
//! server task owns the socket; everything here is tested without one.

use std::collections::BTreeMap;
use std::time::Instant;

use api::xds::{Any, DiscoveryRequest, DiscoveryResponse};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::generator::generate;
use super::proxy::Proxy;
use super::push::PushContext;
use super::resource::{Resource, XdsType};

/// Per-type protocol state, as shown on `/debug/syncz`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchState {
    pub names: Vec<String>,
    pub sent_version: String,
    pub sent_nonce: String,
    pub acked_version: String,
    pub acked_nonce: String,
    /// The last NACK's message, cleared by the next ACK.
    pub nack: Option<String>,
    pub resources: usize,
    #[serde(skip)]
    sent_hash: Option<[u8; 32]>,
    #[serde(skip)]
    push_triggered_at: Option<Instant>,
}

/// What a request turned out to be, for metrics and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestKind {
    Initial,
    Ack {
        /// Time from the change that caused the push to this ACK.
        converged_in: Option<std::time::Duration>,
    },
    Nack(String),
    /// A reply to a response that was already superseded; ignored.
    Stale,
    /// A type Pilot does not serve over ADS; ignored.
    Unknown,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConnectionError {
    #[error("the first request must carry a node")]
    MissingNode,
    #[error(transparent)]
    BadNode(#[from] super::proxy::NodeError),
}

#[derive(Debug, Default)]
pub struct Connection {
    pub proxy: Option<Proxy>,
    pub watches: BTreeMap<XdsType, WatchState>,
    nonce: u64,
}

impl Connection {
    pub fn new() -> Connection {
        Connection::default()
    }

    pub fn on_request(
        &mut self,
        req: DiscoveryRequest,
        push: &PushContext,
    ) -> Result<(RequestKind, Option<DiscoveryResponse>), ConnectionError> {
        if self.proxy.is_none() {
            let node = req.node.as_ref().ok_or(ConnectionError::MissingNode)?;
            self.proxy = Some(Proxy::from_node(node, &push.model)?);
        }
        let Some(kind) = XdsType::from_url(&req.type_url) else {
            return Ok((RequestKind::Unknown, None));
        };
        let watch = self.watches.entry(kind).or_default();
        let mut names = req.resource_names;
        names.sort();
        names.dedup();
        let names_changed = watch.names != names;
        if !req.response_nonce.is_empty() {
            if req.response_nonce != watch.sent_nonce {
                return Ok((RequestKind::Stale, None));
            }
            if let Some(error) = req.error_detail {
                watch.nack = Some(error.message.clone());
                return Ok((RequestKind::Nack(error.message), None));
            }
            watch.acked_version = req.version_info;
            watch.acked_nonce = req.response_nonce;
            watch.nack = None;
            let converged_in = watch.push_triggered_at.take().map(|t| t.elapsed());
            // Envoy changes its RDS/EDS subscription by ACKing with new names.
            let response = if names_changed && !kind.is_wildcard() {
                watch.names = names;
                self.respond(kind, push, false)
            } else {
                None
            };
            return Ok((RequestKind::Ack { converged_in }, response));
        }
        watch.names = names;
        Ok((RequestKind::Initial, self.respond(kind, push, false)))
    }

    /// Responses for everything `push` changed for this proxy, in CDS, EDS, LDS,
    /// RDS order. An endpoint-only push regenerates EDS alone.
    pub fn on_push(&mut self, push: &PushContext) -> Vec<DiscoveryResponse> {
        if let Some(proxy) = &mut self.proxy {
            proxy.refresh(&push.model);
        }
        let kinds: Vec<XdsType> = self.watches.keys().copied().collect();
        kinds
            .into_iter()
            .filter(|k| push.full || *k == XdsType::Endpoint)
            .filter_map(|k| self.respond(k, push, true))
            .collect()
    }

    /// Builds a response unless `only_if_changed` and the content is what was last sent.
    fn respond(
        &mut self,
        kind: XdsType,
        push: &PushContext,
        only_if_changed: bool,
    ) -> Option<DiscoveryResponse> {
        let proxy = self.proxy.as_ref()?;
        let watch = self.watches.get_mut(&kind)?;
        let resources = generate(push, proxy, kind, &watch.names);
        let hash = content_hash(&resources);
        if only_if_changed && watch.sent_hash == Some(hash) {
            return None;
        }
        self.nonce += 1;
        let version = hex::encode(&hash[..8]);
        let nonce = format!("{}-{}", push.version, self.nonce);
        watch.sent_hash = Some(hash);
        watch.sent_version = version.clone();
        watch.sent_nonce = nonce.clone();
        watch.resources = resources.len();
        watch.push_triggered_at = Some(push.triggered_at);
        Some(DiscoveryResponse {
            version_info: version,
            resources: resources
                .into_iter()
                .map(|r| Any {
                    type_url: kind.url().to_string(),
                    value: r.body,
                })
                .collect(),
            type_url: kind.url().to_string(),
            nonce,
        })
    }
}

fn content_hash(resources: &[Resource]) -> [u8; 32] {
    let mut h = Sha256::new();
    for r in resources {
        h.update(r.name.as_bytes());
        h.update(r.hash);
    }
    h.finalize().into()
}
