use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::networking::Errors;

/// `AuthorizationPolicy` (security.istio.io/v1beta1, Istio 1.4: ALLOW
/// only). Once any policy selects a workload, a request reaches it only when
/// some rule of some such policy matches; a policy without rules matches
/// nothing, so it denies everything.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// No selector: every workload of the namespace (of the mesh, in the
    /// root namespace).
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Matches when any `from` and any `to` match (an empty list matches all)
/// and every `when` holds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<From>,
    #[serde(default)]
    pub to: Vec<To>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct From {
    pub source: Source,
}

/// Every field set must match; within a field, any value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities as Istio writes them: `cluster.local/ns/<ns>/sa/<sa>`.
    #[serde(default)]
    pub principals: Vec<String>,
    /// End-user JWT identities: a rule that names them matches nothing until
    /// Trireme verifies JWT.
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    pub operation: Operation,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
}

impl Operation {
    /// Fields only an HTTP request has: a rule that needs them never
    /// matches a TCP connection.
    pub fn is_http_only(&self) -> bool {
        !(self.hosts.is_empty() && self.methods.is_empty() && self.paths.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    pub key: String,
    pub values: Vec<String>,
}

/// The `when` keys Trireme enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    RequestHeader(String),
    SourceIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationIp,
    DestinationPort,
    ConnectionSni,
    /// `request.auth.principal`, `request.auth.claims[…]`, …: end-user JWT.
    RequestAuth(String),
}

impl ConditionKey {
    pub fn parse(key: &str) -> Result<ConditionKey, String> {
        if let Some(rest) = key.strip_prefix("request.headers[") {
            return match rest.strip_suffix(']') {
                Some(name) if !name.is_empty() => Ok(ConditionKey::RequestHeader(name.to_string())),
                _ => Err(format!("{key:?}: a header key is request.headers[<name>]")),
            };
        }
        Ok(match key {
            "source.ip" => ConditionKey::SourceIp,
            "source.namespace" => ConditionKey::SourceNamespace,
            "source.principal" => ConditionKey::SourcePrincipal,
            "destination.ip" => ConditionKey::DestinationIp,
            "destination.port" => ConditionKey::DestinationPort,
            "connection.sni" => ConditionKey::ConnectionSni,
            k if k.starts_with("request.auth.") => ConditionKey::RequestAuth(k.to_string()),
            k => return Err(format!("unknown condition key {k:?}")),
        })
    }

    pub fn is_http_only(&self) -> bool {
        matches!(self, ConditionKey::RequestHeader(_))
    }
}

impl Rule {
    /// Whether the rule reads end-user JWT identities, which Trireme does
    /// not verify yet: such a rule never matches (it admits nothing).
    pub fn needs_jwt(&self) -> bool {
        self.from
            .iter()
            .any(|f| !f.source.request_principals.is_empty())
            || self.when.iter().any(|c| {
                matches!(
                    ConditionKey::parse(&c.key),
                    Ok(ConditionKey::RequestAuth(_))
                )
            })
    }

    /// Whether the rule can only ever match an HTTP request.
    pub fn is_http_only(&self) -> bool {
        self.to.iter().any(|t| t.operation.is_http_only())
            || self
                .when
                .iter()
                .any(|c| ConditionKey::parse(&c.key).is_ok_and(|k| k.is_http_only()))
    }
}

/// `*`, `prefix*`, `*suffix` or an exact value: Istio's string match.
pub(super) fn validate_pattern(value: &str, path: &str, errors: &mut Errors) {
    let inner = value.trim_start_matches('*').trim_end_matches('*');
    if value.is_empty() {
        errors.push(path, "must not be empty");
    } else if inner.contains('*')
        || (value.starts_with('*') && value.ends_with('*') && value != "*")
    {
        errors.push(
            path,
            format!(
                "{value:?}: a wildcard is allowed only as the whole value, a prefix or a suffix"
            ),
        );
    }
}

pub(super) fn validate_port(value: &str, path: &str, errors: &mut Errors) {
    if !value.parse::<u16>().is_ok_and(|p| p != 0) {
        errors.push(path, format!("{value:?} is not a port in 1..65535"));
    }
}

pub(super) fn validate_ip_block(value: &str, path: &str, errors: &mut Errors) {
    let (ip, len) = match value.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (value, None),
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        errors.push(
            path,
            format!("{value:?} is not an IP address or CIDR block"),
        );
        return;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Some(len) = len
        && !len.parse::<u8>().is_ok_and(|l| l <= max)
    {
        errors.push(
            path,
            format!("{value:?}: the prefix length is not in 0..{max}"),
        );
    }
}

impl AuthorizationPolicy {
    pub fn validate(&self) -> Errors {
        let mut errors = Errors::default();
        for (i, rule) in self.rules.iter().enumerate() {
            let path = format!("spec.rules[{i}]");
            for (j, from) in rule.from.iter().enumerate() {
                let path = format!("{path}.from[{j}].source");
                let s = &from.source;
                for (k, p) in s.principals.iter().chain(&s.namespaces).enumerate() {
                    let field = if k < s.principals.len() {
                        format!("{path}.principals[{k}]")
                    } else {
                        format!("{path}.namespaces[{}]", k - s.principals.len())
                    };
                    validate_pattern(p, &field, &mut errors);
                }
                for (k, b) in s.ip_blocks.iter().enumerate() {
                    validate_ip_block(b, &format!("{path}.ipBlocks[{k}]"), &mut errors);
                }
            }
            for (j, to) in rule.to.iter().enumerate() {
                let path = format!("{path}.to[{j}].operation");
                let op = &to.operation;
                for (name, values) in [
                    ("hosts", &op.hosts),
                    ("methods", &op.methods),
                    ("paths", &op.paths),
                ] {
                    for (k, v) in values.iter().enumerate() {
                        validate_pattern(v, &format!("{path}.{name}[{k}]"), &mut errors);
                    }
                }
                for (k, p) in op.ports.iter().enumerate() {
                    validate_port(p, &format!("{path}.ports[{k}]"), &mut errors);
                }
            }
            for (j, c) in rule.when.iter().enumerate() {
                let path = format!("{path}.when[{j}]");
                match ConditionKey::parse(&c.key) {
                    Err(e) => errors.push(format!("{path}.key"), e),
                    Ok(key) => {
                        if c.values.is_empty() {
                            errors.push(format!("{path}.values"), "a condition needs values");
                        }
                        for (k, v) in c.values.iter().enumerate() {
                            let field = format!("{path}.values[{k}]");
                            match key {
                                ConditionKey::SourceIp | ConditionKey::DestinationIp => {
                                    validate_ip_block(v, &field, &mut errors)
                                }
                                ConditionKey::DestinationPort => {
                                    validate_port(v, &field, &mut errors)
                                }
                                _ => validate_pattern(v, &field, &mut errors),
                            }
                        }
                    }
                }
            }
        }
        errors
    }
}
