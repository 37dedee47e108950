//! Marshalled xDS resources: encoded once per push and shared, by reference
//! count, by every stream that sends them.

use bytes::Bytes;
use prost::Message;
use xxhash_rust::xxh3::xxh3_64;

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// The four types Pilot serves, in the order a full push sends them, so Envoy
/// never sees a listener before its route's cluster (CDS, EDS, LDS, RDS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum XdsType {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl XdsType {
    pub const PUSH_ORDER: [XdsType; 4] = [
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
    ];

    pub fn url(self) -> &'static str {
        match self {
            XdsType::Cluster => CLUSTER,
            XdsType::Endpoint => ENDPOINT,
            XdsType::Listener => LISTENER,
            XdsType::Route => ROUTE,
        }
    }

    pub fn from_url(url: &str) -> Option<XdsType> {
        XdsType::PUSH_ORDER.into_iter().find(|t| t.url() == url)
    }

    /// Istio's short names, used in metrics and debug pages.
    pub fn short(self) -> &'static str {
        match self {
            XdsType::Cluster => "cds",
            XdsType::Endpoint => "eds",
            XdsType::Listener => "lds",
            XdsType::Route => "rds",
        }
    }

    /// LDS and CDS are sent whole; RDS and EDS only for the names asked for.
    pub fn is_wildcard(self) -> bool {
        matches!(self, XdsType::Cluster | XdsType::Listener)
    }

    /// The type whose resources name this type's: clusters name their load
    /// assignments, listeners their route tables.
    pub fn parent(self) -> Option<XdsType> {
        match self {
            XdsType::Endpoint => Some(XdsType::Cluster),
            XdsType::Route => Some(XdsType::Listener),
            _ => None,
        }
    }

    pub fn child(self) -> Option<XdsType> {
        match self {
            XdsType::Cluster => Some(XdsType::Endpoint),
            XdsType::Listener => Some(XdsType::Route),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub body: Bytes,
    /// Hash of `body`: what tells a changed resource from an unchanged one.
    pub hash: u64,
}

impl Resource {
    pub fn encode<M: Message>(name: impl Into<String>, message: &M) -> Resource {
        let body = Bytes::from(message.encode_to_vec());
        // XXH3 with its fixed seed: stable across processes, so versions
        // survive a Pilot restart, and fast enough to hash every resource of
        // every push (SipHash, the earlier choice, was several times slower).
        let hash = xxh3_64(&body);
        Resource {
            name: name.into(),
            body,
            hash,
        }
    }
}
