//! Pilot's xDS metrics, under Istio's names.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
pub struct XdsMetrics {
    pub connected: Gauge,
    pub pushes: Family<Labels, Counter>,
    pub push_time: Histogram,
    pub rejects: Family<Labels, Counter>,
    pub convergence: Histogram,
    pub push_contexts: Family<Labels, Counter>,
}

impl XdsMetrics {
    pub fn new(registry: &mesh::metrics::Metrics) -> XdsMetrics {
        let m = XdsMetrics {
            connected: Gauge::default(),
            pushes: Family::default(),
            push_time: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            rejects: Family::default(),
            convergence: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            push_contexts: Family::default(),
        };
        registry.register("pilot_xds", "Connected xDS clients", m.connected.clone());
        registry.register(
            "pilot_xds_pushes",
            "xDS responses sent, by type",
            m.pushes.clone(),
        );
        registry.register(
            "pilot_xds_push_time",
            "Seconds to generate and queue one proxy's responses for a push",
            m.push_time.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "xDS responses a proxy NACKed, by type",
            m.rejects.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Seconds from a config or endpoint change to the proxy's ACK",
            m.convergence.clone(),
        );
        registry.register(
            "pilot_push_contexts",
            "Push contexts built, by kind (full or eds)",
            m.push_contexts.clone(),
        );
        m
    }
}
