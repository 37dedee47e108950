use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Errors, PortSelector, validate_host};
use crate::duration::IstioDuration;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    pub host: String,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    pub port: PortSelector,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

impl TrafficPolicy {
    /// The policy that applies on one port: port-level settings replace the
    /// top-level ones field by field, as in Istio.
    pub fn for_port(&self, port: u32) -> TrafficPolicy {
        let Some(p) = self
            .port_level_settings
            .iter()
            .find(|p| p.port.number == port)
        else {
            return self.overlay(&TrafficPolicy::default());
        };
        self.overlay(&TrafficPolicy {
            load_balancer: p.load_balancer.clone(),
            connection_pool: p.connection_pool.clone(),
            outlier_detection: p.outlier_detection.clone(),
            tls: p.tls.clone(),
            port_level_settings: Vec::new(),
        })
    }

    /// This policy with every field `over` sets replaced, port-level
    /// settings left out: a subset's policy over its rule's, which Istio 1.4
    /// applied one after the other.
    pub fn overlay(&self, over: &TrafficPolicy) -> TrafficPolicy {
        TrafficPolicy {
            load_balancer: over
                .load_balancer
                .clone()
                .or_else(|| self.load_balancer.clone()),
            connection_pool: over
                .connection_pool
                .clone()
                .or_else(|| self.connection_pool.clone()),
            outlier_detection: over
                .outlier_detection
                .clone()
                .or_else(|| self.outlier_detection.clone()),
            tls: over.tls.clone().or_else(|| self.tls.clone()),
            port_level_settings: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    #[serde(default)]
    pub simple: Option<SimpleLb>,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHashLb>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    RoundRobin,
    LeastConn,
    Random,
    Passthrough,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    #[serde(default)]
    pub http_header_name: Option<String>,
    #[serde(default)]
    pub http_cookie: Option<HttpCookie>,
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    pub name: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub ttl: Option<IstioDuration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    #[serde(default)]
    pub http: Option<HttpSettings>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub connect_timeout: Option<IstioDuration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(default)]
    pub http1_max_pending_requests: Option<u32>,
    #[serde(default)]
    pub http2_max_requests: Option<u32>,
    #[serde(default)]
    pub max_requests_per_connection: Option<u32>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default)]
    pub idle_timeout: Option<IstioDuration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default)]
    pub consecutive_errors: Option<u32>,
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default, rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default)]
    pub interval: Option<IstioDuration>,
    #[serde(default)]
    pub base_ejection_time: Option<IstioDuration>,
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
    #[serde(default)]
    pub min_health_percent: Option<u32>,
}

/// Client-side TLS for the destination (see docs/security.md).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSettings {
    /// `DISABLE` when not given, as in Istio.
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub client_certificate: String,
    #[serde(default)]
    pub private_key: String,
    #[serde(default)]
    pub ca_certificates: String,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub sni: String,
}

impl DestinationRule {
    pub fn validate(&self) -> Errors {
        let mut errors = Errors::default();
        validate_host(&self.host, "spec.host", &mut errors);
        if let Some(tp) = &self.traffic_policy {
            tp.validate("spec.trafficPolicy", &mut errors);
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.subsets.iter().enumerate() {
            let path = format!("spec.subsets[{i}]");
            if s.name.is_empty() {
                errors.push(format!("{path}.name"), "subset name is required");
            } else if !seen.insert(&s.name) {
                errors.push(
                    format!("{path}.name"),
                    format!("duplicate subset {:?}", s.name),
                );
            }
            if let Some(tp) = &s.traffic_policy {
                tp.validate(&format!("{path}.trafficPolicy"), &mut errors);
            }
        }
        errors
    }
}

impl TrafficPolicy {
    fn validate(&self, path: &str, errors: &mut Errors) {
        validate_parts(
            self.load_balancer.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
            path,
            errors,
        );
        for (i, p) in self.port_level_settings.iter().enumerate() {
            let ppath = format!("{path}.portLevelSettings[{i}]");
            if p.port.number == 0 || p.port.number > 65535 {
                errors.push(format!("{ppath}.port.number"), "port is not in 1..65535");
            }
            validate_parts(
                p.load_balancer.as_ref(),
                p.outlier_detection.as_ref(),
                p.tls.as_ref(),
                &ppath,
                errors,
            );
        }
    }
}

fn validate_parts(
    lb: Option<&LoadBalancerSettings>,
    od: Option<&OutlierDetection>,
    tls: Option<&TlsSettings>,
    path: &str,
    errors: &mut Errors,
) {
    if let Some(lb) = lb
        && lb.simple.is_some() == lb.consistent_hash.is_some()
    {
        errors.push(
            format!("{path}.loadBalancer"),
            "exactly one of simple or consistentHash must be set",
        );
    }
    if let Some(od) = od {
        for (name, v) in [
            ("maxEjectionPercent", od.max_ejection_percent),
            ("minHealthPercent", od.min_health_percent),
        ] {
            if let Some(v) = v
                && v > 100
            {
                errors.push(
                    format!("{path}.outlierDetection.{name}"),
                    format!("{v} is not in [0, 100]"),
                );
            }
        }
    }
    if let Some(tls) = tls {
        if !matches!(
            tls.mode.as_str(),
            "" | "DISABLE" | "SIMPLE" | "MUTUAL" | "ISTIO_MUTUAL"
        ) {
            errors.push(
                format!("{path}.tls.mode"),
                format!("unknown TLS mode {:?}", tls.mode),
            );
        }
        if tls.mode == "MUTUAL" {
            for (field, value) in [
                ("clientCertificate", &tls.client_certificate),
                ("privateKey", &tls.private_key),
            ] {
                if value.is_empty() {
                    errors.push(
                        format!("{path}.tls.{field}"),
                        "MUTUAL needs the client's certificate and key files",
                    );
                }
            }
        }
    }
}
