//! mixer-telemetry's own metrics, on the monitoring port (the mesh's
//! metrics are the prometheus adapter's, on 42422).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    /// `mixer` (Istio's Report) or `als` (Envoy's access log service).
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabel {
    pub handler: String,
}

#[derive(Clone)]
pub struct TelemetryMetrics {
    pub bags: Family<ApiLabel, Counter>,
    pub dispatched_bags: Counter,
    pub dropped_bags: Family<ApiLabel, Counter>,
    pub bad_requests: Family<ApiLabel, Counter>,
    pub undeclared_attributes: Counter,
    pub instances: Counter,
    pub instance_errors: Counter,
    pub handler_errors: Family<HandlerLabel, Counter>,
    pub queued_batches: Gauge,
    pub mesh_series: Gauge,
    pub expired_series: Counter,
    pub config_errors: Gauge,
    pub config_generation: Gauge,
}

impl TelemetryMetrics {
    pub fn new(registry: &mesh::metrics::Metrics) -> TelemetryMetrics {
        let m = TelemetryMetrics {
            bags: Family::default(),
            dispatched_bags: Counter::default(),
            dropped_bags: Family::default(),
            bad_requests: Family::default(),
            undeclared_attributes: Counter::default(),
            instances: Counter::default(),
            instance_errors: Counter::default(),
            handler_errors: Family::default(),
            queued_batches: Gauge::default(),
            mesh_series: Gauge::default(),
            expired_series: Counter::default(),
            config_errors: Gauge::default(),
            config_generation: Gauge::default(),
        };
        let r = registry;
        r.register(
            "mixer_report_bags",
            "Attribute bags accepted for dispatch, by API",
            m.bags.clone(),
        );
        r.register(
            "mixer_report_dispatched_bags",
            "Attribute bags dispatched to adapters",
            m.dispatched_bags.clone(),
        );
        r.register(
            "mixer_report_dropped_bags",
            "Attribute bags dropped because the dispatch queue was full, by API",
            m.dropped_bags.clone(),
        );
        r.register(
            "mixer_report_bad_requests",
            "Reports refused as INVALID_ARGUMENT, by API",
            m.bad_requests.clone(),
        );
        r.register(
            "mixer_undeclared_attributes",
            "Attributes received that no attribute manifest declares (ignored)",
            m.undeclared_attributes.clone(),
        );
        r.register(
            "mixer_report_instances",
            "Instances handed to handlers",
            m.instances.clone(),
        );
        r.register(
            "mixer_report_instance_errors",
            "Instances that could not be built (a missing attribute without a default)",
            m.instance_errors.clone(),
        );
        r.register(
            "mixer_report_handler_errors",
            "Report batches a handler failed or did not finish in time, by handler",
            m.handler_errors.clone(),
        );
        r.register(
            "mixer_report_queued_batches",
            "Batches waiting for dispatch",
            m.queued_batches.clone(),
        );
        r.register(
            "mixer_prometheus_series",
            "Series the prometheus adapter exposes on its port",
            m.mesh_series.clone(),
        );
        r.register(
            "mixer_prometheus_expired_series",
            "Series dropped after their metricsExpiryDuration without updates",
            m.expired_series.clone(),
        );
        r.register(
            "mixer_config_errors",
            "Config objects rejected in the current config",
            m.config_errors.clone(),
        );
        r.register(
            "mixer_config_generation",
            "Config snapshots built since start",
            m.config_generation.clone(),
        );
        m
    }
}
