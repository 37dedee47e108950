//! Istio configuration objects as written in YAML: the envelope (`apiVersion`,
//! `kind`, `metadata`) around a typed spec, and the strict parsing of
//! multi-document files.
//!
//! Every error names the object (`Kind namespace/name`), the field below it
//! and what is wrong. An object with several problems has them all
//! reported: [`parse_documents_all`] and [`parse_value_all`] return every
//! one as its own [`ConfigError`]; [`parse_documents`] and [`parse_value`]
//! return one per object, naming the first error's field and listing the
//! rest in its message.

mod kind;
mod parse;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use kind::Kind;
pub use parse::{parse_documents, parse_documents_all, parse_value, parse_value_all};

use crate::networking::{
    DestinationRule, EnvoyFilter, Errors, Gateway, ServiceEntry, Sidecar, VirtualService,
};
use crate::security::{
    AuthenticationPolicy, AuthorizationPolicy, RbacConfig, ServiceRole, ServiceRoleBinding,
};

/// The part of Kubernetes' ObjectMeta that config objects carry. Other metadata
/// fields (uid, managedFields, …) are accepted and ignored: they come from the API
/// server, not the operator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    VirtualService(VirtualService),
    DestinationRule(Box<DestinationRule>),
    ServiceEntry(ServiceEntry),
    Sidecar(Sidecar),
    /// `Policy` and `MeshPolicy`.
    Authentication(AuthenticationPolicy),
    AuthorizationPolicy(AuthorizationPolicy),
    Gateway(Gateway),
    EnvoyFilter(Box<EnvoyFilter>),
    ServiceRole(ServiceRole),
    ServiceRoleBinding(ServiceRoleBinding),
    /// `RbacConfig` and `ClusterRbacConfig`.
    RbacConfig(RbacConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigObject {
    pub kind: Kind,
    pub meta: Meta,
    pub spec: Spec,
}

impl ConfigObject {
    /// `Kind namespace/name`, the way errors and debug pages name an object.
    pub fn key(&self) -> String {
        object_name(self.kind, &self.meta)
    }

    /// Every semantic problem of the object, as parsing reports them: for
    /// an object built or changed in code rather than parsed.
    pub fn validate(&self) -> Vec<ConfigError> {
        let object = self.key();
        validate_spec(self.kind, &self.meta.name, &self.spec)
            .0
            .into_iter()
            .map(|e| ConfigError {
                object: object.clone(),
                field: e.field,
                message: e.message,
            })
            .collect()
    }
}

/// The checks of one kind; `name` is the object's, which some kinds constrain.
fn validate_spec(kind: Kind, name: &str, spec: &Spec) -> Errors {
    match spec {
        Spec::VirtualService(s) => s.validate(),
        Spec::DestinationRule(s) => s.validate(),
        Spec::ServiceEntry(s) => s.validate(),
        Spec::Sidecar(s) => s.validate(),
        Spec::Authentication(p) if kind == Kind::MeshPolicy => p.validate_mesh(name),
        Spec::Authentication(p) => p.validate_namespaced(name),
        Spec::AuthorizationPolicy(p) => p.validate(),
        Spec::Gateway(g) => g.validate(name),
        Spec::EnvoyFilter(f) => f.validate(),
        Spec::ServiceRole(r) => r.validate(),
        Spec::ServiceRoleBinding(b) => b.validate(),
        Spec::RbacConfig(c) => c.validate(kind.name(), name),
    }
}

/// A document that is not an Istio config kind (a Kubernetes `Service`, say),
/// handed on to whoever reads that kind.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherDocument {
    pub api_version: String,
    pub kind: String,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Config(Box<ConfigObject>),
    Other(OtherDocument),
}

/// Why one object (or one YAML document) was rejected; also the shape of a
/// warning from [`crate::analysis`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ConfigError {
    /// `VirtualService default/reviews`, or `document 3` when no name could be read.
    pub object: String,
    /// Path below the object: `spec.http[0].route[1].weight`; empty for the whole object.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{}: {}: {}", self.object, self.field, self.message)
        }
    }
}

const INVALID_YAML: &str = "invalid YAML";

impl ConfigError {
    /// The file could not be read as YAML at all, as opposed to one object in it being wrong.
    pub fn is_syntax(&self) -> bool {
        self.field.is_empty() && self.message.starts_with(INVALID_YAML)
    }

    /// One error standing for all of an object's: the first one's field,
    /// and its message followed by the others, so none is silently lost.
    /// `None` for an empty list.
    pub fn combine(errors: Vec<ConfigError>) -> Option<ConfigError> {
        let mut errors = errors.into_iter();
        let mut first = errors.next()?;
        let rest: Vec<String> = errors
            .map(|e| {
                if e.field.is_empty() {
                    e.message
                } else {
                    format!("{}: {}", e.field, e.message)
                }
            })
            .collect();
        if !rest.is_empty() {
            first.message = format!(
                "{} (and {} more: {})",
                first.message,
                rest.len(),
                rest.join("; ")
            );
        }
        Some(first)
    }
}

/// `Kind namespace/name`, or `Kind name` for a cluster-scoped kind.
fn object_name(kind: Kind, meta: &Meta) -> String {
    if kind.is_namespaced() {
        format!("{} {}/{}", kind.name(), meta.namespace, meta.name)
    } else {
        format!("{} {}", kind.name(), meta.name)
    }
}
