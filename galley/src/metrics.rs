//! Galley's metrics, under Istio 1.4's names where it had them.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

pub type Labels = Vec<(String, String)>;

#[derive(Clone, Default)]
pub struct Metrics {
    pub registry: mesh::metrics::Metrics,
    /// MCP streams open now.
    pub clients: Gauge,
    pub acks: Family<Labels, Counter>,
    pub nacks: Family<Labels, Counter>,
    pub pushes: Family<Labels, Counter>,
    /// Admission reviews by `resource` (the kind's plural), allowed or not.
    pub validation_passed: Family<Labels, Counter>,
    pub validation_failed: Family<Labels, Counter>,
    pub resources: Gauge,
    pub rejected: Gauge,
    pub certificate_loaded: Gauge,
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics::default();
        let r = &m.registry;
        r.register(
            "galley_mcp_source_clients",
            "MCP sink streams open",
            m.clients.clone(),
        );
        r.register(
            "galley_mcp_source_request_acks",
            "Pushes sinks ACKed, by collection",
            m.acks.clone(),
        );
        r.register(
            "galley_mcp_source_request_nacks",
            "Pushes sinks NACKed, by collection",
            m.nacks.clone(),
        );
        r.register(
            "galley_mcp_source_pushes",
            "Resources messages sent, by collection",
            m.pushes.clone(),
        );
        r.register(
            "galley_validation_passed",
            "Admission reviews allowed, by resource",
            m.validation_passed.clone(),
        );
        r.register(
            "galley_validation_failed",
            "Admission reviews denied, by resource and reason",
            m.validation_failed.clone(),
        );
        r.register(
            "galley_runtime_resources",
            "Valid resources being distributed",
            m.resources.clone(),
        );
        r.register(
            "galley_runtime_rejected",
            "Objects of the sources refused by validation",
            m.rejected.clone(),
        );
        r.register(
            "galley_webhook_certificate_loaded",
            "Whether the webhook's serving certificate is loaded",
            m.certificate_loaded.clone(),
        );
        m
    }
}
