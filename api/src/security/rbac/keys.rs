//! The keys of a ServiceRole's `constraints` and of a binding subject's
//! `properties`, and the format of their values.

use crate::networking::Errors;
use crate::security::authorization::{validate_ip_block, validate_pattern, validate_port};

/// The `constraints` keys Istio 1.4 documents for a ServiceRole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstraintKey {
    DestinationIp,
    DestinationPort,
    DestinationLabel(String),
    DestinationNamespace,
    DestinationUser,
    RequestHeader(String),
    /// `experimental.envoy.filters.*`: dynamic metadata of a filter.
    EnvoyFilterMetadata(String),
}

impl ConstraintKey {
    pub fn parse(key: &str) -> Result<ConstraintKey, String> {
        if let Some(label) = bracketed(key, "destination.labels")? {
            return Ok(ConstraintKey::DestinationLabel(label));
        }
        if let Some(header) = bracketed(key, "request.headers")? {
            return Ok(ConstraintKey::RequestHeader(header));
        }
        Ok(match key {
            "destination.ip" => ConstraintKey::DestinationIp,
            "destination.port" => ConstraintKey::DestinationPort,
            "destination.namespace" => ConstraintKey::DestinationNamespace,
            "destination.user" => ConstraintKey::DestinationUser,
            k if k.starts_with("experimental.envoy.filters.") => {
                ConstraintKey::EnvoyFilterMetadata(k.to_string())
            }
            "" => return Err("a constraint's key is required".into()),
            k => return Err(format!("unknown constraint key {k:?}")),
        })
    }
}

/// The `properties` keys Istio 1.4 documents for a ServiceRoleBinding subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyKey {
    SourceIp,
    SourceNamespace,
    SourcePrincipal,
    RequestHeader(String),
    /// `request.auth.*`: end-user JWT.
    RequestAuth(String),
}

impl PropertyKey {
    pub fn parse(key: &str) -> Result<PropertyKey, String> {
        if let Some(header) = bracketed(key, "request.headers")? {
            return Ok(PropertyKey::RequestHeader(header));
        }
        if bracketed(key, "request.auth.claims")?.is_some() {
            return Ok(PropertyKey::RequestAuth(key.to_string()));
        }
        Ok(match key {
            "source.ip" => PropertyKey::SourceIp,
            "source.namespace" => PropertyKey::SourceNamespace,
            "source.principal" => PropertyKey::SourcePrincipal,
            "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => {
                PropertyKey::RequestAuth(key.to_string())
            }
            k => return Err(format!("unknown property key {k:?}")),
        })
    }
}

/// `prefix[name]` → `Some(name)`; `None` when `key` is not of that prefix.
fn bracketed(key: &str, prefix: &str) -> Result<Option<String>, String> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    match rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(name) if !name.is_empty() => Ok(Some(name.to_string())),
        _ => Err(format!("{key:?}: write {prefix}[<name>]")),
    }
}

impl ConstraintKey {
    /// Checks one value of a constraint with this key.
    pub(super) fn validate_value(&self, value: &str, path: &str, errors: &mut Errors) {
        match self {
            ConstraintKey::DestinationIp => validate_ip_block(value, path, errors),
            ConstraintKey::DestinationPort => validate_port(value, path, errors),
            // Matched against filter metadata as written (`[update]`).
            ConstraintKey::EnvoyFilterMetadata(_) => {}
            _ => validate_pattern(value, path, errors),
        }
    }
}

impl PropertyKey {
    /// Checks the value of a property with this key.
    pub(super) fn validate_value(&self, value: &str, path: &str, errors: &mut Errors) {
        match self {
            PropertyKey::SourceIp => validate_ip_block(value, path, errors),
            _ => validate_pattern(value, path, errors),
        }
    }
}
