//! One ADS stream as a state machine with no I/O: fed requests (first
//! requests, ACKs, NACKs) and pushes, it returns the responses to send. The
//! server task owns the socket; everything here is tested without one.

use std::collections::BTreeMap;
use std::sync::Arc;
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
    /// Shared with the `/debug/syncz` copy; an EDS subscription names every cluster.
    pub names: Arc<Vec<String>>,
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
    /// The push context's inbound fingerprint for this proxy when last generated.
    inbound: u64,
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
            let proxy = Proxy::from_node(node, &push.model)?;
            self.inbound = push
                .model
                .inbound
                .get(&proxy.ip)
                .copied()
                .unwrap_or_default();
            self.proxy = Some(proxy);
        }
        let Some(kind) = XdsType::from_url(&req.type_url) else {
            return Ok((RequestKind::Unknown, None));
        };
        let watch = self.watches.entry(kind).or_default();
        let mut names = req.resource_names;
        names.sort();
        names.dedup();
        let names_changed = *watch.names != names;
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
                watch.names = Arc::new(names);
                self.respond(kind, push, false)
            } else {
                None
            };
            return Ok((RequestKind::Ack { converged_in }, response));
        }
        watch.names = Arc::new(names);
        Ok((RequestKind::Initial, self.respond(kind, push, false)))
    }

    /// Responses for everything `push` changed for this proxy, in CDS, EDS, LDS,
    /// RDS order. An endpoint-only push regenerates EDS alone, unless the
    /// proxy's own inbound ports changed with it.
    pub fn on_push(&mut self, push: &PushContext) -> Vec<DiscoveryResponse> {
        let Some(proxy) = &mut self.proxy else {
            return Vec::new();
        };
        proxy.refresh(&push.model);
        let inbound = push
            .model
            .inbound
            .get(&proxy.ip)
            .copied()
            .unwrap_or_default();
        let full = push.full || inbound != self.inbound;
        self.inbound = inbound;
        let kinds: Vec<XdsType> = self.watches.keys().copied().collect();
        kinds
            .into_iter()
            .filter(|k| full || *k == XdsType::Endpoint)
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
        let resources = generate(push, proxy, kind, watch.names.as_slice());
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
        h.update(r.hash.to_le_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use api::mesh::MeshConfig;
    use api::xds::Status;

    use super::*;
    use crate::xds::fixtures::{mesh_yaml, push_from_yaml, sidecar_node};
    use crate::xds::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

    fn request(type_url: &str, names: &[&str], nonce: &str, version: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(sidecar_node("10.100.0.2", "svc-0-0", false)),
            type_url: type_url.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            version_info: version.into(),
            error_detail: None,
        }
    }

    fn ack(r: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
        request(&r.type_url, names, &r.nonce, &r.version_info)
    }

    #[test]
    fn first_request_is_answered_and_ack_recorded() {
        let push = push_from_yaml(1, &mesh_yaml(2, 2), MeshConfig::default());
        let mut conn = Connection::new();
        let (kind, resp) = conn
            .on_request(request(CLUSTER, &[], "", ""), &push)
            .unwrap();
        assert_eq!(kind, RequestKind::Initial);
        let resp = resp.unwrap();
        // 2 services × (plain + 2 subsets) + BlackHole + Passthrough + 1 inbound + InboundPassthrough.
        assert_eq!(resp.resources.len(), 10);
        let (kind, again) = conn.on_request(ack(&resp, &[]), &push).unwrap();
        assert!(matches!(
            kind,
            RequestKind::Ack {
                converged_in: Some(_)
            }
        ));
        assert!(again.is_none(), "an ACK is not answered");
        assert_eq!(
            conn.watches[&XdsType::Cluster].acked_version,
            resp.version_info
        );
    }

    #[test]
    fn nack_is_recorded_and_cleared_by_the_next_ack() {
        let push = push_from_yaml(1, &mesh_yaml(1, 1), MeshConfig::default());
        let mut conn = Connection::new();
        let resp = conn
            .on_request(request(LISTENER, &[], "", ""), &push)
            .unwrap()
            .1
            .unwrap();
        let mut nack = ack(&resp, &[]);
        nack.version_info = String::new();
        nack.error_detail = Some(Status {
            code: 3,
            message: "bad listener".into(),
        });
        let (kind, none) = conn.on_request(nack, &push).unwrap();
        assert_eq!(kind, RequestKind::Nack("bad listener".into()));
        assert!(none.is_none());
        assert_eq!(
            conn.watches[&XdsType::Listener].nack.as_deref(),
            Some("bad listener")
        );
        assert_eq!(conn.watches[&XdsType::Listener].acked_version, "");
        conn.on_request(ack(&resp, &[]), &push).unwrap();
        assert_eq!(conn.watches[&XdsType::Listener].nack, None);
    }

    #[test]
    fn stale_nonces_are_ignored() {
        let push = push_from_yaml(1, &mesh_yaml(1, 1), MeshConfig::default());
        let mut conn = Connection::new();
        conn.on_request(request(CLUSTER, &[], "", ""), &push)
            .unwrap();
        let (kind, resp) = conn
            .on_request(request(CLUSTER, &[], "old-nonce", "v0"), &push)
            .unwrap();
        assert_eq!(kind, RequestKind::Stale);
        assert!(resp.is_none());
        assert_eq!(conn.watches[&XdsType::Cluster].acked_version, "");
    }

    #[test]
    fn eds_subscription_changes_are_answered() {
        let push = push_from_yaml(1, &mesh_yaml(2, 2), MeshConfig::default());
        let mut conn = Connection::new();
        let a = "outbound|8080||svc-0.default.svc.cluster.local";
        let b = "outbound|8080|v1|svc-1.default.svc.cluster.local";
        let first = conn
            .on_request(request(ENDPOINT, &[a], "", ""), &push)
            .unwrap()
            .1
            .unwrap();
        assert_eq!(first.resources.len(), 1);
        let (_, second) = conn.on_request(ack(&first, &[a, b]), &push).unwrap();
        assert_eq!(second.unwrap().resources.len(), 2);
    }

    #[test]
    fn pushes_send_only_what_changed() {
        let yaml = mesh_yaml(2, 2);
        let push1 = push_from_yaml(1, &yaml, MeshConfig::default());
        let mut conn = Connection::new();
        for t in [CLUSTER, LISTENER] {
            conn.on_request(request(t, &[], "", ""), &push1).unwrap();
        }
        conn.on_request(request(ROUTE, &["8080"], "", ""), &push1)
            .unwrap();
        let eds = ["outbound|8080|v1|svc-1.default.svc.cluster.local"];
        conn.on_request(request(ENDPOINT, &eds, "", ""), &push1)
            .unwrap();

        let same = push_from_yaml(2, &yaml, MeshConfig::default());
        assert!(
            conn.on_push(&same).is_empty(),
            "identical config sends nothing"
        );

        // svc-1 loses an endpoint: an endpoint-only push touches EDS alone.
        let fewer = push_from_yaml(
            3,
            &mesh_yaml(2, 2).replace("  - ip: 10.100.1.2\n", "  - ip: 10.100.1.99\n"),
            MeshConfig::default(),
        );
        let eds_only = same.with_endpoints(4, &fewer.model, std::time::Instant::now());
        let sent = conn.on_push(&eds_only);
        assert_eq!(
            sent.iter().map(|r| r.type_url.as_str()).collect::<Vec<_>>(),
            vec![ENDPOINT]
        );

        let routed = push_from_yaml(
            5,
            &yaml
                .replace("weight: 90", "weight: 50")
                .replace("weight: 10", "weight: 50"),
            MeshConfig::default(),
        );
        let sent = conn.on_push(&routed);
        assert_eq!(
            sent.iter().map(|r| r.type_url.as_str()).collect::<Vec<_>>(),
            vec![ENDPOINT, ROUTE]
        );
    }

    #[test]
    fn the_first_request_needs_a_valid_node() {
        let push = push_from_yaml(1, &mesh_yaml(1, 1), MeshConfig::default());
        let mut req = request(CLUSTER, &[], "", "");
        req.node = None;
        assert_eq!(
            Connection::new()
                .on_request(req.clone(), &push)
                .unwrap_err(),
            ConnectionError::MissingNode
        );
        req.node = Some(api::xds::Node {
            id: "garbage".into(),
            ..Default::default()
        });
        assert!(matches!(
            Connection::new().on_request(req, &push),
            Err(ConnectionError::BadNode(_))
        ));
    }
}
