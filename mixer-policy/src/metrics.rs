//! mixer-policy's own metrics, on the monitoring port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    /// `mixer` (Istio's API) or `ext_authz` (Envoy's).
    pub api: &'static str,
    /// A gRPC code name: `ok`, `permission_denied`, …
    pub code: &'static str,
}

#[derive(Clone)]
pub struct PolicyMetrics {
    pub checks: Family<Labels, Counter>,
    pub quotas: Family<Labels, Counter>,
    pub check_cache_hits: Counter,
    pub undeclared_attributes: Counter,
    pub bad_requests: Counter,
    pub check_duration: Histogram,
    pub config_errors: Gauge,
    pub config_generation: Gauge,
}

impl PolicyMetrics {
    pub fn new(registry: &mesh::metrics::Metrics) -> PolicyMetrics {
        let m = PolicyMetrics {
            checks: Family::default(),
            quotas: Family::default(),
            check_cache_hits: Counter::default(),
            undeclared_attributes: Counter::default(),
            bad_requests: Counter::default(),
            // 20 µs to ~0.3 s.
            check_duration: Histogram::new(exponential_buckets(0.00002, 2.0, 14)),
            config_errors: Gauge::default(),
            config_generation: Gauge::default(),
        };
        registry.register(
            "mixer_checks",
            "Checks answered, by API and status code",
            m.checks.clone(),
        );
        registry.register(
            "mixer_quotas",
            "Quota allocations, by API and status code",
            m.quotas.clone(),
        );
        registry.register(
            "mixer_check_cache_hits",
            "Checks answered from the check cache",
            m.check_cache_hits.clone(),
        );
        registry.register(
            "mixer_undeclared_attributes",
            "Attributes received that no attribute manifest declares (ignored)",
            m.undeclared_attributes.clone(),
        );
        registry.register(
            "mixer_bad_requests",
            "Requests refused as INVALID_ARGUMENT (bad word index, wrong value type)",
            m.bad_requests.clone(),
        );
        registry.register(
            "mixer_check_duration_seconds",
            "Time to answer a check, quotas included",
            m.check_duration.clone(),
        );
        registry.register(
            "mixer_config_errors",
            "Config objects rejected in the current config",
            m.config_errors.clone(),
        );
        registry.register(
            "mixer_config_generation",
            "Config snapshots built since start",
            m.config_generation.clone(),
        );
        m
    }
}

/// How metrics name a code: the gRPC name in lower case.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}
