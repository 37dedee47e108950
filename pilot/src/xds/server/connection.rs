//! One ADS stream as a state machine with no I/O: fed requests (first
//! requests, ACKs, NACKs) and pushes, it returns the responses to send. The
//! server task owns the socket; everything here is tested without one. What a
//! response holds is the resource cache's business ([`crate::xds::cache`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use api::xds::{Any, DiscoveryRequest, DiscoveryResponse};
use serde::Serialize;

use crate::xds::cache::{Scope, TypeCache};
use crate::xds::generate::Generators;
use crate::xds::proxy::Proxy;
use crate::xds::push::PushContext;
use crate::xds::resource::XdsType;

/// Per-type protocol state, as shown on `/debug/syncz`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchState {
    #[serde(flatten)]
    pub cache: TypeCache,
    pub sent_nonce: String,
    pub acked_version: String,
    pub acked_nonce: String,
    /// The last NACK's message, cleared by the next ACK.
    pub nack: Option<String>,
    /// The config objects the last NACK is about (`Kind namespace/name`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nack_objects: Vec<String>,
    /// The parent type (CDS for EDS, LDS for RDS) was answered since this type
    /// last was: Envoy's warming clusters and listeners wait for an answer to
    /// the request that follows, even if it names nothing new.
    #[serde(skip)]
    owed: bool,
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
    BadNode(#[from] crate::xds::proxy::NodeError),
}

pub struct Connection {
    generators: Arc<Generators>,
    pub proxy: Option<Proxy>,
    pub watches: BTreeMap<XdsType, WatchState>,
    nonce: u64,
    /// The push context's inbound fingerprint for this proxy when last generated.
    inbound: u64,
    /// The newest push this connection has caught up with. Pushes are skipped
    /// when a stream falls behind, so what is stale is worked out from the
    /// versions at which each kind of content last changed, never from the
    /// newest push alone: a full push followed by an endpoint push is still a
    /// full push for a stream that saw neither.
    seen: u64,
}

impl Default for Connection {
    fn default() -> Connection {
        Connection::with_generators(Generators::standard())
    }
}

impl Connection {
    /// A connection answering with the standard generators.
    pub fn new() -> Connection {
        Connection::default()
    }

    pub fn with_generators(generators: Arc<Generators>) -> Connection {
        Connection {
            generators,
            proxy: None,
            watches: BTreeMap::new(),
            nonce: 0,
            inbound: 0,
            seen: 0,
        }
    }

    pub fn on_request(
        &mut self,
        req: DiscoveryRequest,
        push: &PushContext,
    ) -> Result<(RequestKind, Option<DiscoveryResponse>), ConnectionError> {
        if self.proxy.is_none() {
            let node = req.node.as_ref().ok_or(ConnectionError::MissingNode)?;
            let proxy = Proxy::from_node(node, &push.model)?;
            self.inbound = push.inbound_fingerprint(&proxy.ip);
            self.seen = push.version;
            self.proxy = Some(proxy);
        }
        let Some(kind) = XdsType::from_url(&req.type_url) else {
            return Ok((RequestKind::Unknown, None));
        };
        let watch = self.watches.entry(kind).or_default();
        let mut names = req.resource_names;
        names.sort();
        names.dedup();
        // Envoy changes its RDS/EDS subscription by ACKing (or NACKing) with new names.
        let resubscribed = !kind.is_wildcard() && *watch.cache.names != names;
        if req.response_nonce.is_empty() {
            watch.cache.subscribe(names);
            return Ok((RequestKind::Initial, self.respond(kind, push, Scope::All)));
        }
        if req.response_nonce != watch.sent_nonce {
            return Ok((RequestKind::Stale, None));
        }
        if resubscribed {
            watch.cache.subscribe(names);
        }
        let result = if let Some(error) = req.error_detail {
            watch.nack_objects = super::blame::objects(push, kind, &error.message);
            watch.nack = Some(error.message.clone());
            RequestKind::Nack(error.message)
        } else {
            watch.acked_version = req.version_info;
            watch.acked_nonce = req.response_nonce;
            watch.nack = None;
            watch.nack_objects.clear();
            RequestKind::Ack {
                converged_in: watch.push_triggered_at.take().map(|t| t.elapsed()),
            }
        };
        let response = if resubscribed || watch.owed {
            self.respond(kind, push, Scope::All)
        } else {
            None
        };
        Ok((result, response))
    }

    /// Responses for everything that went stale for this proxy since the last
    /// push it saw, in CDS, EDS, LDS, RDS order. After CDS, EDS is sent in
    /// full (and RDS after LDS): rewritten clusters and listeners warm until
    /// their endpoints and routes arrive, changed or not.
    pub fn on_push(&mut self, push: &PushContext) -> Vec<DiscoveryResponse> {
        let Some(proxy) = &mut self.proxy else {
            return Vec::new();
        };
        proxy.refresh(&push.model);
        let inbound = push.inbound_fingerprint(&proxy.ip);
        let full = push.full_version > self.seen || inbound != self.inbound;
        let endpoints = push.version > self.seen;
        self.inbound = inbound;
        self.seen = self.seen.max(push.version);
        let kinds: Vec<XdsType> = self.watches.keys().copied().collect();
        let mut out: Vec<DiscoveryResponse> = Vec::new();
        for kind in kinds {
            let parent_sent = kind
                .parent()
                .is_some_and(|p| out.iter().any(|r| r.type_url == p.url()));
            let response = if parent_sent {
                self.respond(kind, push, Scope::All)
            } else if full || (endpoints && kind == XdsType::Endpoint) {
                self.respond(kind, push, Scope::Changed)
            } else {
                None
            };
            out.extend(response);
        }
        out
    }

    fn respond(
        &mut self,
        kind: XdsType,
        push: &PushContext,
        scope: Scope,
    ) -> Option<DiscoveryResponse> {
        let proxy = self.proxy.as_ref()?;
        let watch = self.watches.get_mut(&kind)?;
        let names = watch.cache.names.as_slice();
        let resources = self
            .generators
            .get(kind.url())
            .map(|g| g.generate(push, proxy, names))
            .unwrap_or_default();
        let update = watch.cache.update(kind, resources, scope)?;
        self.nonce += 1;
        let nonce = format!("{}-{}", push.version, self.nonce);
        watch.sent_nonce = nonce.clone();
        watch.owed = false;
        watch.push_triggered_at = Some(push.triggered_at);
        if let Some(child) = kind.child().and_then(|c| self.watches.get_mut(&c)) {
            child.owed = true;
        }
        Some(DiscoveryResponse {
            version_info: update.version,
            resources: update
                .resources
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
        let eds_only =
            crate::xds::generate::endpoint_push(&same, 4, &fewer.model, std::time::Instant::now());
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

    /// A connection subscribed to everything for the `mesh_yaml(2, 2)` mesh.
    fn subscribed(push: &PushContext) -> Connection {
        let mut conn = Connection::new();
        for t in [CLUSTER, LISTENER] {
            let r = conn
                .on_request(request(t, &[], "", ""), push)
                .unwrap()
                .1
                .unwrap();
            conn.on_request(ack(&r, &[]), push).unwrap();
        }
        let eds = [
            "outbound|8080|v1|svc-1.default.svc.cluster.local",
            "outbound|8080||svc-0.default.svc.cluster.local",
        ];
        for (t, names) in [(ROUTE, &["8080"][..]), (ENDPOINT, &eds[..])] {
            let r = conn
                .on_request(request(t, names, "", ""), push)
                .unwrap()
                .1
                .unwrap();
            conn.on_request(ack(&r, names), push).unwrap();
        }
        conn
    }

    fn types(sent: &[DiscoveryResponse]) -> Vec<&str> {
        sent.iter().map(|r| r.type_url.as_str()).collect()
    }

    /// Envoy warms rewritten clusters until their endpoints arrive, so a CDS
    /// change is followed by every load assignment, changed or not.
    #[test]
    fn a_cluster_change_resends_its_endpoints() {
        let yaml = mesh_yaml(2, 2);
        let push1 = push_from_yaml(1, &yaml, MeshConfig::default());
        let mut conn = subscribed(&push1);
        let pooled = yaml.replace(
            "  host: svc-1\n",
            "  host: svc-1\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}\n",
        );
        let push2 = push_from_yaml(2, &pooled, MeshConfig::default());
        let sent = conn.on_push(&push2);
        assert_eq!(types(&sent), vec![CLUSTER, ENDPOINT]);
        assert_eq!(sent[1].resources.len(), 2, "every subscribed assignment");
    }

    /// The EDS request Envoy sends after taking new clusters names nothing new
    /// and carries the last EDS nonce, like an ACK; it is answered all the same.
    #[test]
    fn the_eds_request_after_clusters_is_answered() {
        let push = push_from_yaml(1, &mesh_yaml(2, 2), MeshConfig::default());
        let mut conn = Connection::new();
        let eds_names = ["outbound|8080||svc-0.default.svc.cluster.local"];
        let eds = conn
            .on_request(request(ENDPOINT, &eds_names, "", ""), &push)
            .unwrap()
            .1
            .unwrap();
        let (_, none) = conn.on_request(ack(&eds, &eds_names), &push).unwrap();
        assert!(none.is_none(), "a plain ACK is not answered");
        conn.on_request(request(CLUSTER, &[], "", ""), &push)
            .unwrap();
        let (kind, again) = conn.on_request(ack(&eds, &eds_names), &push).unwrap();
        assert!(matches!(kind, RequestKind::Ack { .. }));
        assert_eq!(again.expect("answered after CDS").resources.len(), 1);
        let (_, once) = conn.on_request(ack(&eds, &eds_names), &push).unwrap();
        assert!(
            once.is_none(),
            "only the first request after CDS is owed an answer"
        );
    }

    /// A stream that missed a full push and then sees an endpoint push still
    /// gets everything the full push changed.
    #[test]
    fn a_missed_full_push_is_not_lost_behind_an_endpoint_push() {
        let yaml = mesh_yaml(2, 2);
        let push1 = push_from_yaml(1, &yaml, MeshConfig::default());
        let mut conn = subscribed(&push1);
        let rerouted = push_from_yaml(
            2,
            &yaml
                .replace("weight: 90", "weight: 80")
                .replace("weight: 10", "weight: 20"),
            MeshConfig::default(),
        );
        let moved = push_from_yaml(
            9,
            &yaml.replace("  - ip: 10.100.1.2\n", "  - ip: 10.100.1.99\n"),
            MeshConfig::default(),
        );
        let eds_only =
            crate::xds::generate::endpoint_push(&rerouted, 3, &moved.model, Instant::now());
        assert!(!eds_only.is_full());
        let sent = conn.on_push(&eds_only);
        assert_eq!(types(&sent), vec![ENDPOINT, ROUTE]);
    }

    #[test]
    fn endpoint_pushes_carry_only_changed_assignments() {
        let yaml = mesh_yaml(2, 2);
        let push1 = push_from_yaml(1, &yaml, MeshConfig::default());
        let mut conn = subscribed(&push1);
        let moved = push_from_yaml(
            9,
            &yaml.replace("  - ip: 10.100.1.2\n", "  - ip: 10.100.1.99\n"),
            MeshConfig::default(),
        );
        let sent = conn.on_push(&crate::xds::generate::endpoint_push(
            &push1,
            2,
            &moved.model,
            Instant::now(),
        ));
        assert_eq!(types(&sent), vec![ENDPOINT]);
        assert_eq!(
            sent[0].resources.len(),
            1,
            "svc-0's assignment did not change"
        );
        assert_eq!(conn.watches[&XdsType::Endpoint].cache.resources, 2);
    }

    #[test]
    fn a_nack_that_changes_names_records_them() {
        let push = push_from_yaml(1, &mesh_yaml(2, 2), MeshConfig::default());
        let mut conn = Connection::new();
        let a = "outbound|8080||svc-0.default.svc.cluster.local";
        let b = "outbound|8080||svc-1.default.svc.cluster.local";
        let first = conn
            .on_request(request(ENDPOINT, &[a], "", ""), &push)
            .unwrap()
            .1
            .unwrap();
        let mut nack = ack(&first, &[a, b]);
        nack.error_detail = Some(Status {
            code: 3,
            message: "rejected".into(),
        });
        let (kind, response) = conn.on_request(nack, &push).unwrap();
        assert_eq!(kind, RequestKind::Nack("rejected".into()));
        assert_eq!(
            *conn.watches[&XdsType::Endpoint].cache.names,
            vec![a.to_string(), b.to_string()]
        );
        assert_eq!(
            response
                .expect("the new names are answered")
                .resources
                .len(),
            2
        );
    }

    /// A generator registered for a type answers for it, without a change to
    /// the protocol state machine.
    #[test]
    fn a_registered_generator_answers_its_type() {
        use crate::xds::generate::Generator;
        use crate::xds::resource::Resource;

        struct Canned;
        impl Generator for Canned {
            fn generate(&self, _: &PushContext, _: &Proxy, names: &[String]) -> Vec<Resource> {
                names
                    .iter()
                    .map(|n| Resource::encode(n.as_str(), &n.clone()))
                    .collect()
            }
        }
        let push = push_from_yaml(1, &mesh_yaml(1, 1), MeshConfig::default());
        let generators = Generators::default().with(XdsType::Endpoint, Canned);
        let mut conn = Connection::with_generators(Arc::new(generators));
        let (_, eds) = conn
            .on_request(request(ENDPOINT, &["anything"], "", ""), &push)
            .unwrap();
        assert_eq!(eds.unwrap().resources.len(), 1);
        let (_, cds) = conn
            .on_request(request(CLUSTER, &[], "", ""), &push)
            .unwrap();
        assert!(
            cds.unwrap().resources.is_empty(),
            "no CDS generator in this set"
        );
    }
}
