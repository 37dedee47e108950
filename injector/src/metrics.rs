//! The injector's metrics, under Istio's names.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Counters by `reason`.
pub type Reasons = Family<Vec<(String, String)>, Counter>;

#[derive(Clone, Default)]
pub struct Metrics {
    pub registry: mesh::metrics::Metrics,
    pub requests: Counter,
    pub success: Counter,
    pub skip: Reasons,
    pub failure: Reasons,
    /// 1 once the serving certificate is loaded.
    pub certificate_loaded: Gauge,
    pub config_reload_errors: Counter,
}

/// Counts one more for `reason`.
pub fn count(family: &Reasons, reason: &str) {
    family
        .get_or_create(&vec![("reason".to_string(), reason.to_string())])
        .inc();
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics::default();
        let r = &m.registry;
        r.register(
            "sidecar_injection_requests",
            "Admission requests received",
            m.requests.clone(),
        );
        r.register(
            "sidecar_injection_success",
            "Pods given a sidecar",
            m.success.clone(),
        );
        r.register(
            "sidecar_injection_skip",
            "Pods admitted unchanged, by reason",
            m.skip.clone(),
        );
        r.register(
            "sidecar_injection_failure",
            "Admission requests that failed, by reason",
            m.failure.clone(),
        );
        r.register(
            "sidecar_injector_certificate_loaded",
            "Whether the serving certificate is loaded",
            m.certificate_loaded.clone(),
        );
        r.register(
            "sidecar_injector_config_reload_errors",
            "Config files that changed but did not load; the previous config stays",
            m.config_reload_errors.clone(),
        );
        m
    }
}
