//! `rbac.istio.io/v1alpha1`, deprecated in Istio 1.4 in favour of
//! `AuthorizationPolicy`: `ServiceRole`, `ServiceRoleBinding`, and the
//! switch that turns them on, `ClusterRbacConfig` (or the older,
//! namespaced `RbacConfig`). Trireme validates them as Istio 1.4 did.

mod keys;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use keys::{ConstraintKey, PropertyKey};

use super::authorization::{validate_ip_block, validate_pattern};
use crate::networking::Errors;

/// A set of permissions.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRole {
    #[serde(default)]
    pub rules: Vec<AccessRule>,
}

/// Every field set must match; within a field, any value. Values are exact,
/// `prefix*`, `*suffix` or `*`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessRule {
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub ports: Vec<i64>,
    #[serde(default)]
    pub not_ports: Vec<i64>,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Constraint {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// Grants a role to subjects.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRoleBinding {
    #[serde(default)]
    pub subjects: Vec<Subject>,
    #[serde(default)]
    pub role_ref: Option<RoleRef>,
    /// A role by name: `name` in this namespace, `/name` in the root one.
    #[serde(default)]
    pub role: String,
    /// Inline permissions, instead of a role.
    #[serde(default)]
    pub actions: Vec<AccessRule>,
    #[serde(default)]
    pub mode: Option<EnforcementMode>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub not_names: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub not_groups: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub not_ips: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EnforcementMode {
    #[default]
    Enforced,
    Permissive,
}

/// The spec of `ClusterRbacConfig` and of `RbacConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RbacConfig {
    #[serde(default)]
    pub mode: RbacMode,
    /// Present (`inclusion: {}` for none) when the mode is ON_WITH_INCLUSION.
    #[serde(default)]
    pub inclusion: Option<RbacTarget>,
    /// Present (`exclusion: {}` for none) when the mode is ON_WITH_EXCLUSION.
    #[serde(default)]
    pub exclusion: Option<RbacTarget>,
    #[serde(default)]
    pub enforcement_mode: Option<EnforcementMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RbacMode {
    #[default]
    Off,
    On,
    OnWithInclusion,
    OnWithExclusion,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RbacTarget {
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// The only name Istio reads a `ClusterRbacConfig` or `RbacConfig` under.
pub const RBAC_CONFIG_NAME: &str = "default";

impl ServiceRole {
    pub fn validate(&self) -> Errors {
        let mut errors = Errors::default();
        if self.rules.is_empty() {
            errors.push("spec.rules", "at least one rule is required");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("spec.rules[{i}]"), &mut errors);
        }
        errors
    }
}

impl AccessRule {
    fn validate(&self, path: &str, errors: &mut Errors) {
        for (name, values) in [
            ("services", &self.services),
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
        ] {
            for (i, v) in values.iter().enumerate() {
                validate_pattern(v, &format!("{path}.{name}[{i}]"), errors);
            }
        }
        for (field, not_field, both) in [
            (
                "methods",
                "notMethods",
                !self.methods.is_empty() && !self.not_methods.is_empty(),
            ),
            (
                "ports",
                "notPorts",
                !self.ports.is_empty() && !self.not_ports.is_empty(),
            ),
        ] {
            if both {
                errors.push(
                    format!("{path}.{not_field}"),
                    format!("a rule sets {field} or {not_field}, not both"),
                );
            }
        }
        for (name, ports) in [("ports", &self.ports), ("notPorts", &self.not_ports)] {
            for (i, p) in ports.iter().enumerate() {
                if !(1..=65535).contains(p) {
                    errors.push(
                        format!("{path}.{name}[{i}]"),
                        format!("port {p} is not in 1..65535"),
                    );
                }
            }
        }
        let port_field = !(self.ports.is_empty() && self.not_ports.is_empty());
        for (i, c) in self.constraints.iter().enumerate() {
            let cpath = format!("{path}.constraints[{i}]");
            if c.key == "destination.port" && port_field {
                errors.push(
                    format!("{cpath}.key"),
                    "destination.port repeats the rule's ports or notPorts; use one of them",
                );
            }
            let key = ConstraintKey::parse(&c.key);
            if let Err(message) = &key {
                errors.push(format!("{cpath}.key"), message.clone());
            }
            if c.values.is_empty() {
                errors.push(format!("{cpath}.values"), "at least one value is required");
            }
            if let Ok(key) = key {
                for (j, v) in c.values.iter().enumerate() {
                    key.validate_value(v, &format!("{cpath}.values[{j}]"), errors);
                }
            }
        }
    }
}

impl ServiceRoleBinding {
    pub fn validate(&self) -> Errors {
        let mut errors = Errors::default();
        if self.subjects.is_empty() {
            errors.push("spec.subjects", "at least one subject is required");
        }
        for (i, s) in self.subjects.iter().enumerate() {
            s.validate(&format!("spec.subjects[{i}]"), &mut errors);
        }
        let roles = [
            self.role_ref.is_some(),
            !self.role.is_empty(),
            !self.actions.is_empty(),
        ];
        if roles.iter().filter(|r| **r).count() != 1 {
            errors.push(
                "spec",
                "exactly one of roleRef, role and actions is required",
            );
        }
        if let Some(r) = &self.role_ref {
            if r.kind != "ServiceRole" {
                errors.push(
                    "spec.roleRef.kind",
                    format!(
                        "kind {:?} is not ServiceRole, the only kind a binding refers to",
                        r.kind
                    ),
                );
            }
            if r.name.is_empty() {
                errors.push("spec.roleRef.name", "the role's name is required");
            }
        }
        if self.role == "/" {
            errors.push(
                "spec.role",
                "\"/\" names no role: write /<name> for one in the root namespace",
            );
        }
        for (i, rule) in self.actions.iter().enumerate() {
            rule.validate(&format!("spec.actions[{i}]"), &mut errors);
        }
        errors
    }
}

impl Subject {
    fn is_empty(&self) -> bool {
        self.user.is_empty()
            && self.group.is_empty()
            && self.properties.is_empty()
            && [
                &self.names,
                &self.not_names,
                &self.groups,
                &self.not_groups,
                &self.namespaces,
                &self.not_namespaces,
                &self.ips,
                &self.not_ips,
            ]
            .iter()
            .all(|v| v.is_empty())
    }

    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.is_empty() {
            errors.push(
                path,
                "a subject names at least one user, group, property, name, namespace or IP",
            );
        }
        for (name, values) in [("names", &self.names), ("notNames", &self.not_names)] {
            if values.iter().any(|v| v == "*") {
                // `user: "*"` matched everyone, `source.principal: "*"` only
                // authenticated peers: Istio 1.4 refused the ambiguity.
                errors.push(
                    format!("{path}.{name}"),
                    "\"*\" is ambiguous here; use user: \"*\" for everyone",
                );
            }
        }
        for (name, values) in [
            ("names", &self.names),
            ("notNames", &self.not_names),
            ("groups", &self.groups),
            ("notGroups", &self.not_groups),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
        ] {
            for (i, v) in values.iter().enumerate() {
                validate_pattern(v, &format!("{path}.{name}[{i}]"), errors);
            }
        }
        for (name, values) in [("ips", &self.ips), ("notIps", &self.not_ips)] {
            for (i, v) in values.iter().enumerate() {
                validate_ip_block(v, &format!("{path}.{name}[{i}]"), errors);
            }
        }
        for (key, value) in &self.properties {
            let ppath = format!("{path}.properties.{key}");
            let first_class = match key.as_str() {
                "source.principal" => Some(("names", &self.names)),
                "source.namespace" => Some(("namespaces", &self.namespaces)),
                "source.ip" => Some(("ips", &self.ips)),
                "request.auth.claims[groups]" => Some(("groups", &self.groups)),
                _ => None,
            };
            if let Some((field, values)) = first_class
                && !values.is_empty()
            {
                errors.push(
                    &ppath,
                    format!("{key} repeats the subject's {field}; use one of them"),
                );
            }
            match PropertyKey::parse(key) {
                Err(message) => errors.push(&ppath, message),
                Ok(k) => k.validate_value(value, &ppath, errors),
            }
        }
    }
}

impl RbacConfig {
    /// `kind` is `ClusterRbacConfig` or `RbacConfig`; `name` the object's.
    pub fn validate(&self, kind: &str, name: &str) -> Errors {
        let mut errors = Errors::default();
        if name != RBAC_CONFIG_NAME {
            errors.push(
                "metadata.name",
                format!(
                    "a {kind} must be named {RBAC_CONFIG_NAME}, not {name:?}: Istio reads no other"
                ),
            );
        }
        if self.mode == RbacMode::OnWithInclusion && self.inclusion.is_none() {
            errors.push(
                "spec.inclusion",
                "ON_WITH_INCLUSION needs inclusion (inclusion: {} for none)",
            );
        }
        if self.mode == RbacMode::OnWithExclusion && self.exclusion.is_none() {
            errors.push(
                "spec.exclusion",
                "ON_WITH_EXCLUSION needs exclusion (exclusion: {} for none)",
            );
        }
        errors
    }
}
