use std::collections::HashMap;
use std::sync::Arc;

use super::ValueType;

/// Which attributes exist and their types: Istio's standard manifests
/// (`istioproxy` and `kubernetes`) plus whatever `attributemanifest` objects
/// declare. Expressions are type-checked against it and decoded attributes
/// are validated by it.
#[derive(Debug, Clone)]
pub struct Vocabulary(Arc<HashMap<String, ValueType>>);

impl Vocabulary {
    /// Istio 1.4's standard attributes, which every proxy may send.
    pub fn standard() -> Vocabulary {
        Vocabulary::from_pairs(STANDARD.iter().map(|(n, t)| (n.to_string(), *t)))
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, ValueType)>) -> Vocabulary {
        Vocabulary(Arc::new(pairs.into_iter().collect()))
    }

    /// This vocabulary with `more` declared as well; a later declaration of
    /// a name replaces the earlier one, as Istio's manifests merged.
    pub fn with(&self, more: impl IntoIterator<Item = (String, ValueType)>) -> Vocabulary {
        let mut map = (*self.0).clone();
        map.extend(more);
        Vocabulary(Arc::new(map))
    }

    pub fn type_of(&self, name: &str) -> Option<ValueType> {
        self.0.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for Vocabulary {
    fn default() -> Self {
        Vocabulary::standard()
    }
}

use ValueType::{
    Bool as B, Duration as D, Int64 as I, IpAddress as Ip, String as S, StringMap as M,
    Timestamp as T,
};

const STANDARD: &[(&str, ValueType)] = &[
    // The proxy's own attributes (Istio's `istioproxy` manifest).
    ("origin.ip", Ip),
    ("origin.uid", S),
    ("origin.user", S),
    ("request.headers", M),
    ("request.id", S),
    ("request.host", S),
    ("request.method", S),
    ("request.path", S),
    ("request.url_path", S),
    ("request.query_params", M),
    ("request.reason", S),
    ("request.referer", S),
    ("request.scheme", S),
    ("request.size", I),
    ("request.total_size", I),
    ("request.time", T),
    ("request.useragent", S),
    ("response.code", I),
    ("response.duration", D),
    ("response.headers", M),
    ("response.size", I),
    ("response.total_size", I),
    ("response.time", T),
    ("response.grpc_status", S),
    ("response.grpc_message", S),
    ("source.uid", S),
    ("source.user", S),
    ("source.principal", S),
    ("destination.uid", S),
    ("destination.principal", S),
    ("destination.port", I),
    ("connection.event", S),
    ("connection.id", S),
    ("connection.received.bytes", I),
    ("connection.received.bytes_total", I),
    ("connection.sent.bytes", I),
    ("connection.sent.bytes_total", I),
    ("connection.duration", D),
    ("connection.mtls", B),
    ("connection.requested_server_name", S),
    ("context.protocol", S),
    ("context.proxy_error_code", S),
    ("context.proxy_version", S),
    ("context.time", T),
    ("context.timestamp", T),
    ("context.reporter.kind", S),
    ("context.reporter.local", B),
    ("context.reporter.uid", S),
    ("api.service", S),
    ("api.version", S),
    ("api.operation", S),
    ("api.protocol", S),
    ("request.auth.principal", S),
    ("request.auth.audiences", S),
    ("request.auth.presenter", S),
    ("request.auth.claims", M),
    ("request.auth.raw_claims", S),
    ("request.api_key", S),
    ("check.error_code", I),
    ("check.error_message", S),
    ("check.cache_hit", B),
    ("quota.cache_hit", B),
    // Workload metadata (Istio's `kubernetes` manifest).
    ("source.ip", Ip),
    ("source.port", I),
    ("source.name", S),
    ("source.namespace", S),
    ("source.owner", S),
    ("source.labels", M),
    ("source.serviceAccount", S),
    ("source.services", S),
    ("source.workload.uid", S),
    ("source.workload.name", S),
    ("source.workload.namespace", S),
    ("destination.ip", Ip),
    ("destination.name", S),
    ("destination.namespace", S),
    ("destination.owner", S),
    ("destination.labels", M),
    ("destination.serviceAccount", S),
    ("destination.container.name", S),
    ("destination.service.host", S),
    ("destination.service.uid", S),
    ("destination.service.name", S),
    ("destination.service.namespace", S),
    ("destination.workload.uid", S),
    ("destination.workload.name", S),
    ("destination.workload.namespace", S),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_types() {
        let v = Vocabulary::standard();
        assert_eq!(v.type_of("source.ip"), Some(ValueType::IpAddress));
        assert_eq!(v.type_of("request.headers"), Some(ValueType::StringMap));
        assert_eq!(v.type_of("response.duration"), Some(ValueType::Duration));
        assert_eq!(v.type_of("no.such"), None);
        let more = v.with([("my.attr".to_string(), ValueType::Bool)]);
        assert_eq!(more.type_of("my.attr"), Some(ValueType::Bool));
        assert_eq!(v.type_of("my.attr"), None);
    }
}
