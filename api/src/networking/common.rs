use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Errors;

/// A port as written in ServiceEntry, Sidecar and Gateway.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
}

impl Port {
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        if self.number == 0 || self.number > 65535 {
            errors.push(
                format!("{path}.number"),
                format!("port number {} is not in 1..65535", self.number),
            );
        }
        if !self.protocol.is_empty() && Protocol::parse(&self.protocol).is_none() {
            errors.push(
                format!("{path}.protocol"),
                format!("unknown protocol {:?}", self.protocol),
            );
        }
    }
}

/// Istio's protocol names, parsed case-insensitively as Istio does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Https,
    Tcp,
    Tls,
    Mongo,
    Redis,
    Mysql,
    Udp,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_uppercase().as_str() {
            "HTTP" => Protocol::Http,
            "HTTP2" => Protocol::Http2,
            "GRPC" | "GRPC-WEB" => Protocol::Grpc,
            "HTTPS" => Protocol::Https,
            "TCP" => Protocol::Tcp,
            "TLS" => Protocol::Tls,
            "MONGO" => Protocol::Mongo,
            "REDIS" => Protocol::Redis,
            "MYSQL" => Protocol::Mysql,
            "UDP" => Protocol::Udp,
            _ => return None,
        })
    }

    /// Istio's port-name convention: `http`, `http-foo`, `grpc-web`, `tcp-db`.
    pub fn from_port_name(name: &str) -> Protocol {
        let prefix = name.split('-').next().unwrap_or_default();
        match prefix.to_ascii_lowercase().as_str() {
            "grpc" => Protocol::Grpc,
            "http2" => Protocol::Http2,
            // Unnamed or unrecognised ports are TCP, as in Istio 1.x.
            p => Protocol::parse(p).unwrap_or(Protocol::Tcp),
        }
    }

    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

/// `exact`, `prefix` or `regex`: exactly one must be set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    pub fn validate(&self, path: &str, errors: &mut Errors) {
        let set = [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set != 1 {
            errors.push(path, "exactly one of exact, prefix or regex must be set");
        }
        if let Some(re) = &self.regex
            && let Err(message) = crate::re2::check(re)
        {
            errors.push(format!("{path}.regex"), message);
        }
    }
}

/// A percentage in `[0, 100]`, with fractions (`0.1` is one request in a thousand).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

pub fn validate_percent(value: f64, path: &str, errors: &mut Errors) {
    if !(0.0..=100.0).contains(&value) {
        errors.push(path, format!("percentage {value} is not in [0, 100]"));
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

pub fn validate_host(host: &str, path: &str, errors: &mut Errors) {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if host.is_empty() {
        errors.push(path, "host must not be empty");
    } else if host != "*"
        && (bare.is_empty()
            || bare.contains('*')
            || !bare
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')))
    {
        errors.push(path, format!("invalid host {host:?}"));
    }
}
