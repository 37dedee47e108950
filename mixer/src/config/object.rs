//! Mixer's config objects as read from YAML: the kinds of
//! `config.istio.io/v1alpha2`, each keyed by its full name
//! `<name>.<kind>.<namespace>`. Other API groups in the same files (Pilot's
//! kinds, Kubernetes objects) are skipped.

pub use api::config::ConfigError;
use serde::Deserialize;
use serde_json::Value as Json;

/// One Mixer config object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub spec: Json,
    /// Where it came from, for errors: `file.yaml`.
    pub source: String,
}

impl Object {
    /// `<name>.<kind>.<namespace>`, as rules refer to objects.
    pub fn full_name(&self) -> String {
        format!("{}.{}.{}", self.name, self.kind, self.namespace)
    }

    /// How errors name it: `rule deny.rule.istio-system`.
    pub fn label(&self) -> String {
        format!("{} {}", self.kind, self.full_name())
    }

    /// The spec as `T`, unknown fields refused, an error naming the field.
    pub fn spec<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        crate::adapter::params(&self.spec).map_err(|e| ConfigError {
            object: self.label(),
            field: if e.field.is_empty() {
                "spec".into()
            } else {
                format!("spec.{}", e.field)
            },
            message: e.message,
        })
    }
}

/// The API groups Mixer reads.
fn is_mixer_group(api_version: &str) -> bool {
    matches!(
        api_version,
        "config.istio.io/v1alpha2" | "policy.istio.io/v1beta1"
    )
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

/// Parses every document of one file. Each bad document is an error of its
/// own; a YAML syntax error ends the file there (the stream cannot resume).
pub fn parse_file(
    source: &str,
    text: &str,
    default_namespace: &str,
) -> Vec<Result<Object, ConfigError>> {
    let mut out = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let label = format!("{source} document {}", index + 1);
        let value = match serde_yaml::Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                out.push(Err(ConfigError {
                    object: label,
                    field: String::new(),
                    message: format!("invalid YAML: {e}"),
                }));
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        if let Some(result) = parse_value(value, &label, source, default_namespace) {
            out.push(result);
        }
    }
    out
}

/// One decoded document: `None` when it is not of Mixer's API groups.
/// `label` names it in errors until its name is known.
pub fn parse_value(
    value: serde_yaml::Value,
    label: &str,
    source: &str,
    default_namespace: &str,
) -> Option<Result<Object, ConfigError>> {
    let err = |object: String, field: &str, message: String| ConfigError {
        object,
        field: field.into(),
        message,
    };
    let serde_yaml::Value::Mapping(map) = value else {
        return Some(Err(err(
            label.into(),
            "",
            "a document must be a mapping".into(),
        )));
    };
    let api_version = map.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    if !is_mixer_group(api_version) {
        return None;
    }
    let Some(kind) = map.get("kind").and_then(|v| v.as_str()) else {
        return Some(Err(err(
            label.into(),
            "kind",
            "kind is required and must be a string".into(),
        )));
    };
    let meta: Meta = match map.get("metadata").cloned() {
        Some(m) => match serde_yaml::from_value(m) {
            Ok(m) => m,
            Err(e) => {
                return Some(Err(err(
                    format!("{kind} in {label}"),
                    "metadata",
                    e.to_string(),
                )));
            }
        },
        None => Meta {
            name: String::new(),
            namespace: String::new(),
        },
    };
    let namespace = if meta.namespace.is_empty() {
        default_namespace.to_string()
    } else {
        meta.namespace
    };
    let object = format!("{kind} {}.{kind}.{namespace}", meta.name);
    if meta.name.is_empty() {
        return Some(Err(err(object, "metadata.name", "name is required".into())));
    }
    for key in map.keys() {
        let key = key.as_str().unwrap_or_default();
        if !matches!(key, "apiVersion" | "kind" | "metadata" | "spec" | "status") {
            return Some(Err(err(object, key, format!("unknown field `{key}`"))));
        }
    }
    let spec = map.get("spec").cloned().unwrap_or(serde_yaml::Value::Null);
    let spec = match serde_json::to_value(spec) {
        Ok(s) => s,
        Err(e) => return Some(Err(err(object, "spec", e.to_string()))),
    };
    Some(Ok(Object {
        kind: kind.to_string(),
        name: meta.name,
        namespace,
        spec,
        source: source.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mixer_kinds_and_skips_others() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n\
                    apiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: h}\nspec: {compiledAdapter: denier}\n---\n\
                    apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r, namespace: ns}\nspec: {}\n";
        let objects: Vec<_> = parse_file("a.yaml", text, "istio-system")
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].full_name(), "h.handler.istio-system");
        assert_eq!(objects[1].full_name(), "r.rule.ns");
    }

    #[test]
    fn bad_documents_are_errors_of_their_own() {
        let text = "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {}\n---\n\
                    apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r}\nspex: {}\n---\n\
                    apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: ok}\n---\n\
                    : [\n";
        let results = parse_file("a.yaml", text, "istio-system");
        let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(results.len(), 4);
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0].field, "metadata.name");
        assert_eq!(errors[1].field, "spex");
        assert!(errors[2].message.starts_with("invalid YAML"));
    }
}
