//! Validation of every kind Istio 1.4's Galley validated: Pilot's through
//! `api`, the library Pilot itself parses with, and Mixer's through the
//! Mixer runtime, so expressions are type-checked exactly as Mixer will.
//! The webhook, the directory and Kubernetes sources, `galley validate` and
//! `meshctl validate` all come here, so none of them can disagree.

use std::collections::BTreeMap;
use std::sync::Arc;

use api::config::{ConfigError, ConfigObject, Document};
use api::mcp::Collection;
use serde::Deserialize;
use serde_json::Value as Json;

/// Where Mixer objects without a namespace live, as Mixer's own
/// `--configDefaultNamespace` would place them.
pub const MIXER_NAMESPACE: &str = "istio-system";

/// An object that passed validation, as Galley distributes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub collection: &'static Collection,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The spec as written.
    pub spec: Json,
    /// Pilot's typed reading, for cross-object analysis (not for Mixer's kinds).
    pub typed: Option<Arc<ConfigObject>>,
}

impl Resource {
    /// The MCP name: `namespace/name`, or `name` for a cluster-scoped kind.
    pub fn key(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        }
    }

    /// How errors name it: `VirtualService default/reviews`.
    pub fn label(&self) -> String {
        format!("{} {}", self.collection.kind, self.key())
    }

    fn mixer_object(&self) -> mixer::config::Object {
        mixer::config::Object {
            kind: self.collection.kind.to_string(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            spec: self.spec.clone(),
            source: self.label(),
        }
    }
}

/// What one YAML document turned out to be.
#[derive(Debug, Clone)]
pub enum Checked {
    /// Valid on its own; a Mixer object is valid once checked with the
    /// others ([`check_mixer`]).
    Valid(Arc<Resource>),
    Invalid {
        /// `(collection, key)` when the object could be named, so the last
        /// good version of it can stay in force.
        key: Option<(&'static str, String)>,
        /// Every error found, at least one.
        errors: Vec<ConfigError>,
    },
    /// A Pod beside the config (local mode's directory): its labels, which
    /// Gateway selectors are checked against.
    Workload(BTreeMap<String, String>),
    /// Not an Istio config kind (a Kubernetes object in the same file).
    Other,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Checks one decoded document; `label` names it when it has no name
/// (`file.yaml document 2`).
pub fn check_value(value: serde_yaml::Value, label: &str) -> Checked {
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    let (api_version, kind) = (text("apiVersion").to_string(), text("kind").to_string());
    let Some(collection) = api::mcp::collection_of(&api_version, &kind) else {
        return not_served(value, label, &api_version, &kind);
    };
    let meta: Meta = value
        .get("metadata")
        .cloned()
        .and_then(|m| serde_yaml::from_value(m).ok())
        .unwrap_or_default();
    let spec = match serde_json::to_value(value.get("spec").unwrap_or(&serde_yaml::Value::Null)) {
        Ok(spec) => spec,
        Err(e) => return invalid(None, label, "spec", e.to_string()),
    };
    if collection.api_version == "config.istio.io/v1alpha2" {
        return check_mixer_document(collection, value, label, spec, meta);
    }
    match api::config::parse_value_all(value, label) {
        Ok(Document::Config(object)) => Checked::Valid(Arc::new(Resource {
            collection,
            namespace: object.meta.namespace.clone(),
            name: object.meta.name.clone(),
            labels: object.meta.labels.clone(),
            annotations: object.meta.annotations.clone(),
            spec,
            typed: Some(Arc::from(object)),
        })),
        Ok(Document::Other(_)) => Checked::Other,
        Err(errors) => {
            let key = (!meta.name.is_empty()).then(|| {
                let namespace = match (collection.namespaced, meta.namespace.as_str()) {
                    (false, _) => String::new(),
                    (true, "") => "default".to_string(),
                    (true, ns) => ns.to_string(),
                };
                let key = if namespace.is_empty() {
                    meta.name.clone()
                } else {
                    format!("{namespace}/{}", meta.name)
                };
                (collection.name, key)
            });
            Checked::Invalid { key, errors }
        }
    }
}

fn check_mixer_document(
    collection: &'static Collection,
    value: serde_yaml::Value,
    label: &str,
    spec: Json,
    meta: Meta,
) -> Checked {
    match mixer::config::parse_value(value, label, label, MIXER_NAMESPACE) {
        Some(Ok(object)) => Checked::Valid(Arc::new(Resource {
            collection,
            namespace: object.namespace,
            name: object.name,
            labels: meta.labels,
            annotations: meta.annotations,
            spec,
            typed: None,
        })),
        Some(Err(error)) => {
            let namespace = if meta.namespace.is_empty() {
                MIXER_NAMESPACE
            } else {
                &meta.namespace
            };
            let key = (!meta.name.is_empty())
                .then(|| (collection.name, format!("{namespace}/{}", meta.name)));
            Checked::Invalid {
                key,
                errors: vec![error],
            }
        }
        None => Checked::Other,
    }
}

/// A document whose kind has no collection: an error for Istio's API
/// groups (a typo'd kind must not pass silently), else someone else's.
fn not_served(value: serde_yaml::Value, label: &str, api_version: &str, kind: &str) -> Checked {
    // Mixer's client config: read by Mixer from its own store, not
    // distributed over MCP yet.
    let client_config = matches!(
        kind,
        "QuotaSpec" | "QuotaSpecBinding" | "HTTPAPISpec" | "HTTPAPISpecBinding"
    );
    if !api_version.contains("istio.io") || client_config {
        if api_version.is_empty() || kind.is_empty() {
            let field = if api_version.is_empty() {
                "apiVersion"
            } else {
                "kind"
            };
            return invalid(
                None,
                label,
                field,
                format!("{field} is required and must be a string"),
            );
        }
        if api_version == "v1" && kind == "Pod" {
            let labels = value
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .cloned()
                .and_then(|l| serde_yaml::from_value(l).ok())
                .unwrap_or_default();
            return Checked::Workload(labels);
        }
        return Checked::Other;
    }
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    let object = if name.is_empty() {
        format!("{kind} in {label}")
    } else {
        format!("{kind} {name}")
    };
    Checked::Invalid {
        key: None,
        errors: vec![ConfigError {
            object,
            field: "kind".into(),
            message: format!("{api_version} {kind} is not a kind Istio 1.4 serves"),
        }],
    }
}

fn invalid(
    key: Option<(&'static str, String)>,
    label: &str,
    field: &str,
    message: String,
) -> Checked {
    Checked::Invalid {
        key,
        errors: vec![ConfigError {
            object: label.to_string(),
            field: field.into(),
            message,
        }],
    }
}

/// Every document of a YAML text, checked. A syntax error ends the text
/// there (a YAML stream cannot resume) and is the last item.
pub fn check_text(source: &str, text: &str) -> Vec<Checked> {
    let mut out = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let label = format!("{source} document {}", index + 1);
        match serde_yaml::Value::deserialize(de) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(value @ serde_yaml::Value::Mapping(_)) => out.push(check_value(value, &label)),
            Ok(_) => out.push(invalid(
                None,
                &label,
                "",
                "a document must be a mapping".into(),
            )),
            Err(e) => {
                out.push(invalid(None, &label, "", format!("invalid YAML: {e}")));
                break;
            }
        }
    }
    out
}

/// Checks Mixer's objects together, as Mixer will compile them: a rule's
/// handlers and instances must exist, and every expression must type-check
/// against the attribute vocabulary (the standard one plus every
/// `attributemanifest`). Returns the errors, each naming its object as
/// [`Resource::label`] does. Handlers of in-tree adapters have their params
/// checked by the Mixer binary that runs them.
pub fn check_mixer(resources: &[&Resource]) -> Vec<ConfigError> {
    let mixer: Vec<&Resource> = resources
        .iter()
        .copied()
        .filter(|r| r.typed.is_none())
        .collect();
    if mixer.is_empty() {
        return Vec::new();
    }
    let objects: Vec<mixer::config::Object> = mixer.iter().map(|r| r.mixer_object()).collect();
    let labels: std::collections::HashMap<String, String> = objects
        .iter()
        .zip(&mixer)
        .map(|(o, r)| (o.label(), r.label()))
        .collect();
    let snapshot = mixer::config::Snapshot::build(
        &objects,
        Vec::new(),
        &mixer::config::Snapshot::empty(MIXER_NAMESPACE),
        &mixer::adapter::Registry::validation(),
    );
    snapshot
        .errors
        .into_iter()
        .map(|mut e| {
            if let Some(label) = labels.get(&e.object) {
                e.object = label.clone();
            }
            e
        })
        .collect()
}

/// Everything `galley validate` and `meshctl validate` report for a set of
/// files: errors, and cross-object warnings.
#[derive(Debug, Default)]
pub struct Report {
    pub valid: usize,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

pub fn validate_files(files: &[(String, String)]) -> Report {
    let checked = files
        .iter()
        .flat_map(|(name, text)| check_text(name, text))
        .collect();
    let snapshot = crate::source::assemble(checked, &crate::snapshot::Snapshot::default());
    Report {
        valid: snapshot.len(),
        errors: snapshot.errors,
        warnings: snapshot.warnings,
    }
}

/// `galley validate` and `meshctl validate`: reads `files` (`-` for standard
/// input), prints every error and warning, and returns the exit code: 0 when
/// all is valid, 1 when some object is not, 2 when a file cannot be read.
pub fn run_cli(command: &str, files: &[std::path::PathBuf]) -> i32 {
    let mut texts = Vec::new();
    for path in files {
        let text = if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
        } else {
            std::fs::read_to_string(path)
        };
        match text {
            Ok(text) => texts.push((path.display().to_string(), text)),
            Err(e) => {
                eprintln!("{command}: {}: {e}", path.display());
                return 2;
            }
        }
    }
    let report = validate_files(&texts);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.errors.is_empty() {
        println!("{} objects valid", report.valid);
        return 0;
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    eprintln!(
        "{command}: {} error(s); {} object(s) valid",
        report.errors.len(),
        report.valid
    );
    1
}
