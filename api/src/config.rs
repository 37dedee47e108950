//! Istio configuration objects as written in YAML: the envelope (`apiVersion`,
//! `kind`, `metadata`) around a typed spec, and the strict parsing of
//! multi-document files.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::networking::{DestinationRule, Errors, ServiceEntry, Sidecar, VirtualService};
use crate::security::{AuthenticationPolicy, AuthorizationPolicy};

/// The kinds Trireme serves, with the group/version Istio 1.x documents them under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Sidecar,
    /// `authentication.istio.io/v1alpha1`: peer authentication of a namespace or its services.
    Policy,
    /// `authentication.istio.io/v1alpha1`, cluster-scoped: the mesh's default.
    MeshPolicy,
    AuthorizationPolicy,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::Policy,
        Kind::MeshPolicy,
        Kind::AuthorizationPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::Policy => "Policy",
            Kind::MeshPolicy => "MeshPolicy",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            Kind::Policy | Kind::MeshPolicy => "authentication.istio.io",
            Kind::AuthorizationPolicy => "security.istio.io",
            _ => "networking.istio.io",
        }
    }

    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::Policy | Kind::MeshPolicy => &["v1alpha1"],
            Kind::AuthorizationPolicy => &["v1beta1"],
            _ => &["v1alpha3"],
        }
    }

    /// Cluster-scoped kinds have no namespace.
    pub fn is_namespaced(self) -> bool {
        self != Kind::MeshPolicy
    }

    fn parse(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.split_once('/')?;
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == kind && k.group() == group && k.versions().contains(&version))
    }
}

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

/// Why one object (or one YAML document) was rejected.
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
}

/// Parses every document of a (possibly multi-document) YAML text. Each document
/// succeeds or fails on its own, so one bad object never hides the good ones.
/// Documents are parsed as the iterator is advanced, so only one document's
/// syntax tree is alive at a time however large the file.
pub fn parse_documents(text: &str) -> impl Iterator<Item = Result<Document, ConfigError>> + '_ {
    let mut docs = serde_yaml::Deserializer::from_str(text).enumerate();
    let mut broken = false;
    std::iter::from_fn(move || {
        loop {
            if broken {
                return None;
            }
            let (index, de) = docs.next()?;
            let label = format!("document {}", index + 1);
            let value = match serde_yaml::Value::deserialize(de) {
                Ok(v) => v,
                Err(e) => {
                    // The YAML stream cannot be resumed after a syntax error.
                    broken = true;
                    return Some(Err(ConfigError {
                        object: label,
                        field: String::new(),
                        message: format!("{INVALID_YAML}: {e}"),
                    }));
                }
            };
            if !value.is_null() {
                return Some(parse_document(value, label));
            }
        }
    })
}

fn parse_document(value: serde_yaml::Value, label: String) -> Result<Document, ConfigError> {
    let err = |object: &str, field: &str, message: String| ConfigError {
        object: object.to_string(),
        field: field.to_string(),
        message,
    };
    let serde_yaml::Value::Mapping(map) = value else {
        return Err(err(&label, "", "a document must be a mapping".into()));
    };
    let text_field = |name: &str| {
        map.get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                err(
                    &label,
                    name,
                    format!("{name} is required and must be a string"),
                )
            })
    };
    let api_version = text_field("apiVersion")?;
    let kind_name = text_field("kind")?;
    let meta: Meta = match map.get("metadata") {
        Some(m) => serde_yaml::from_value(m.clone()).map_err(|e| {
            err(
                &format!("{kind_name} in {label}"),
                "metadata",
                e.to_string(),
            )
        })?,
        None => Meta::default(),
    };
    let Some(kind) = Kind::parse(&api_version, &kind_name) else {
        // Mixer's kinds are Mixer's to read; Pilot only notes where rules are.
        let mixer_group = api_version.starts_with("config.istio.io/")
            || api_version.starts_with("policy.istio.io/");
        if api_version.contains("istio.io") && !mixer_group {
            return Err(err(
                &format!("{kind_name} {}", meta.name),
                "kind",
                format!("{api_version} {kind_name} is not a kind Trireme serves"),
            ));
        }
        let value = serde_json::to_value(&map)
            .map_err(|e| err(&format!("{kind_name} in {label}"), "", e.to_string()))?;
        return Ok(Document::Other(OtherDocument {
            api_version,
            kind: kind_name,
            value,
        }));
    };
    let mut meta = meta;
    if !kind.is_namespaced() {
        meta.namespace.clear();
    } else if meta.namespace.is_empty() {
        meta.namespace = "default".into();
    }
    let object = object_name(kind, &meta);
    if meta.name.is_empty() {
        return Err(err(&object, "metadata.name", "name is required".into()));
    }
    for key in map.keys() {
        let key = key.as_str().unwrap_or_default();
        if !matches!(key, "apiVersion" | "kind" | "metadata" | "spec" | "status") {
            return Err(err(&object, key, format!("unknown field `{key}`")));
        }
    }
    let spec_value = map.get("spec").cloned().unwrap_or(serde_yaml::Value::Null);
    let spec =
        parse_spec(kind, spec_value).map_err(|(field, message)| err(&object, &field, message))?;
    let errors = match &spec {
        Spec::VirtualService(s) => s.validate(),
        Spec::DestinationRule(s) => s.validate(),
        Spec::ServiceEntry(s) => s.validate(),
        Spec::Sidecar(s) => s.validate(),
        Spec::Authentication(p) if kind == Kind::MeshPolicy => p.validate_mesh(&meta.name),
        Spec::Authentication(p) => p.validate_namespaced(&meta.name),
        Spec::AuthorizationPolicy(p) => p.validate(),
    };
    if let Some(first) = errors.0.first() {
        let message = describe(&errors);
        return Err(err(&object, &first.field, message));
    }
    Ok(Document::Config(Box::new(ConfigObject {
        kind,
        meta,
        spec,
    })))
}

/// The first error's message, plus a count of the rest so none is silently lost.
fn describe(errors: &Errors) -> String {
    let first = &errors.0[0];
    match errors.0.len() {
        1 => first.message.clone(),
        n => {
            let rest: Vec<String> = errors.0[1..]
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
            format!(
                "{} (and {} more: {})",
                first.message,
                n - 1,
                rest.join("; ")
            )
        }
    }
}

fn parse_spec(kind: Kind, value: serde_yaml::Value) -> Result<Spec, (String, String)> {
    fn typed<T: serde::de::DeserializeOwned>(
        value: serde_yaml::Value,
    ) -> Result<T, (String, String)> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "spec".to_string()
            } else {
                format!("spec.{path}")
            };
            (field, e.into_inner().to_string())
        })
    }
    if value.is_null() {
        return Err(("spec".into(), "spec is required".into()));
    }
    Ok(match kind {
        Kind::VirtualService => Spec::VirtualService(typed(value)?),
        Kind::DestinationRule => Spec::DestinationRule(Box::new(typed(value)?)),
        Kind::ServiceEntry => Spec::ServiceEntry(typed(value)?),
        Kind::Sidecar => Spec::Sidecar(typed(value)?),
        Kind::Policy | Kind::MeshPolicy => Spec::Authentication(typed(value)?),
        Kind::AuthorizationPolicy => Spec::AuthorizationPolicy(typed(value)?),
    })
}

/// `Kind namespace/name`, or `Kind name` for a cluster-scoped kind.
fn object_name(kind: Kind, meta: &Meta) -> String {
    if kind.is_namespaced() {
        format!("{} {}/{}", kind.name(), meta.namespace, meta.name)
    } else {
        format!("{} {}", kind.name(), meta.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Document, ConfigError> {
        let mut docs: Vec<_> = parse_documents(text).collect();
        assert_eq!(docs.len(), 1, "{docs:?}");
        docs.remove(0)
    }

    const VS: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
"#;

    #[test]
    fn parses_a_virtual_service_into_the_default_namespace() {
        let Ok(Document::Config(obj)) = one(VS) else {
            panic!()
        };
        assert_eq!(obj.key(), "VirtualService default/reviews");
        let Spec::VirtualService(vs) = obj.spec else {
            panic!()
        };
        assert_eq!(vs.http.len(), 2);
        assert_eq!(vs.http[1].route[0].weight, Some(80));
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let text = VS.replace("weight: 80", "weigth: 80");
        let e = one(&text).unwrap_err();
        assert_eq!(e.object, "VirtualService default/reviews");
        assert_eq!(e.field, "spec.http[1].route[0].weigth");
        assert!(e.message.contains("unknown field `weigth`"), "{e}");
    }

    #[test]
    fn weights_must_add_up_to_100() {
        let e = one(&VS.replace("weight: 20", "weight: 10")).unwrap_err();
        assert_eq!(e.field, "spec.http[1].route");
        assert!(e.message.contains("add up to 90"), "{e}");
    }

    #[test]
    fn bad_regex_is_rejected() {
        let e = one(&VS.replace("exact: jason", "regex: \"(jason\"")).unwrap_err();
        assert_eq!(e.field, "spec.http[0].match[0].headers.end-user.regex");
    }

    #[test]
    fn kubernetes_documents_are_handed_on() {
        let docs: Vec<_> =
            parse_documents("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n").collect();
        assert!(matches!(&docs[0], Ok(Document::Other(d)) if d.kind == "Service"));
    }

    #[test]
    fn one_bad_document_does_not_hide_the_others() {
        let text = format!(
            "{VS}\n---\napiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata: {{name: g}}\nspec: {{}}\n---\n{VS}"
        );
        let docs: Vec<_> = parse_documents(&text).collect();
        assert_eq!(docs.len(), 3);
        assert!(docs[0].is_ok() && docs[1].is_err() && docs[2].is_ok());
    }

    #[test]
    fn yaml_syntax_errors_name_the_document() {
        let e = one("apiVersion: v1\nkind: [unclosed\n").unwrap_err();
        assert_eq!(e.object, "document 1");
        assert!(e.message.starts_with("invalid YAML"));
    }
}
