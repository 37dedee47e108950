//! What injection reads, as Istio mounts it: the injection config (the
//! `config` key of the `istio-sidecar-injector` ConfigMap: policy, selectors,
//! template), the Helm values the template reads (its `values` key), and the
//! mesh config (the `mesh` key of the `istio` ConfigMap). Built-in defaults,
//! Istio 1.4's shape, apply to whatever is not given.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::inject::Owner;
use crate::policy::{self, Selector};
use crate::template::{Inputs, Sidecar, Template};

/// Renders kept: the Pods of one ReplicaSet look alike to the template
/// (a `generateName`, the same labels and spec), so a scale-up renders once.
const RENDER_CACHE: usize = 1024;

/// Istio 1.4's injection config and template, as shipped in `deploy/`.
pub const DEFAULT_INJECT_CONFIG: &str = include_str!("../../deploy/injector/config.yaml");
/// The Helm values the template reads.
pub const DEFAULT_VALUES: &str = include_str!("../../deploy/injector/values.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

impl ConfigError {
    fn invalid(file: &str, field: impl Into<String>, message: impl ToString) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_string(),
            field: field.into(),
            message: message.to_string(),
        }
    }
}

/// `enabled` injects unless a Pod opts out; `disabled` only when it opts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Enabled,
    Disabled,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InjectFile {
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    always_inject_selector: Vec<LabelSelector>,
    #[serde(default)]
    never_inject_selector: Vec<LabelSelector>,
    #[serde(default)]
    injected_annotations: BTreeMap<String, String>,
    template: String,
}

/// Where each input comes from; `None` takes the built-in default.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub inject_config: Option<PathBuf>,
    pub mesh_config: Option<PathBuf>,
    pub values: Option<PathBuf>,
}

/// Everything injection needs, checked and compiled once.
pub struct Config {
    pub policy: Policy,
    pub always_inject: Vec<Selector>,
    pub never_inject: Vec<Selector>,
    pub injected_annotations: BTreeMap<String, String>,
    pub template: Template,
    /// The Helm values, as the template sees them.
    pub values: Value,
    /// The mesh config's `defaultConfig` over Istio's proxy defaults.
    pub proxy_config: Value,
    pub mesh_config: Value,
    /// Names this config in `sidecar.istio.io/status`: a digest of all three
    /// inputs, so a Pod shows which config injected it.
    pub version: String,
    /// Rendered sidecars by everything the template saw of the Pod.
    renders: Mutex<HashMap<String, Arc<Sidecar>>>,
}

impl Config {
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let inject = read(sources.inject_config.as_deref(), DEFAULT_INJECT_CONFIG)?;
        let values = read(sources.values.as_deref(), DEFAULT_VALUES)?;
        let mesh = read(sources.mesh_config.as_deref(), "")?;
        Config::from_texts(&inject, &values, &mesh)
    }

    pub fn builtin() -> Config {
        // The shipped files are checked by the tests below.
        Config::load(&Sources::default()).unwrap_or_else(|e| panic!("built-in config: {e}"))
    }

    /// `(name, text)` for each input.
    pub fn from_texts(
        inject: &(String, String),
        values: &(String, String),
        mesh: &(String, String),
    ) -> Result<Config, ConfigError> {
        let (inject_name, inject_text) = inject;
        let file: InjectFile =
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(inject_text))
                .map_err(|e| {
                    let path = e.path().to_string();
                    // serde_yaml's message may name the path itself.
                    let message = e.inner().to_string();
                    let message = message
                        .strip_prefix(&format!("{path}: "))
                        .unwrap_or(&message)
                        .to_string();
                    ConfigError::invalid(inject_name, path, message)
                })?;
        let selectors = |field: &str, list: &[LabelSelector]| {
            list.iter()
                .enumerate()
                .map(|(i, s)| {
                    policy::Selector::new(s)
                        .map_err(|e| ConfigError::invalid(inject_name, format!("{field}[{i}]"), e))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let always_inject = selectors("alwaysInjectSelector", &file.always_inject_selector)?;
        let never_inject = selectors("neverInjectSelector", &file.never_inject_selector)?;
        let template = Template::parse(&file.template)
            .map_err(|e| ConfigError::invalid(inject_name, "template", e))?;

        let (values_name, values_text) = values;
        let mut merged_values = yaml_value(DEFAULT_VALUES, "built-in values")?;
        merge(&mut merged_values, yaml_value(values_text, values_name)?);

        let (mesh_name, mesh_text) = mesh;
        // The mesh config's own rules (ports, durations) apply here as in Pilot.
        api::mesh::MeshConfig::parse(mesh_text)
            .map_err(|e| ConfigError::invalid(mesh_name, "mesh", e))?;
        let mesh_config = yaml_value(mesh_text, mesh_name)?;
        let mut proxy_config = proxy_defaults();
        if let Some(given) = mesh_config.get("defaultConfig") {
            merge(&mut proxy_config, given.clone());
        }
        if let Some(mode) = proxy_config["interceptionMode"].as_str()
            && mode != "REDIRECT"
        {
            return Err(ConfigError::invalid(
                mesh_name,
                "defaultConfig.interceptionMode",
                format!("{mode:?}: Trireme's sidecars capture with REDIRECT only"),
            ));
        }
        let version = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(inject_text);
            h.update(merged_values.to_string());
            h.update(proxy_config.to_string());
            h.update(mesh_config.to_string());
            h.finalize().iter().map(|b| format!("{b:02x}")).collect()
        };
        let config = Config {
            renders: Mutex::default(),
            version,
            policy: file.policy,
            always_inject,
            never_inject,
            injected_annotations: file.injected_annotations,
            template,
            values: merged_values,
            proxy_config,
            mesh_config,
        };
        config.trial(inject_name)?;
        Ok(config)
    }

    /// Renders a plain Pod: a template or values that fail for every Pod are
    /// refused when they load, not Pod by Pod.
    fn trial(&self, inject_name: &str) -> Result<(), ConfigError> {
        let mut pod = serde_json::json!({
            "metadata": {"name": "trial", "labels": {"app": "trial"}},
            "spec": {"containers": [{"name": "app", "image": "app", "ports": [{"containerPort": 8080}],
                                     "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}]},
        });
        crate::inject::inject(
            self,
            &mut pod,
            crate::inject::Owner {
                namespace: "default",
                workload: "trial",
            },
        )
        .map(drop)
        .map_err(|e| {
            ConfigError::invalid(
                inject_name,
                "template",
                format!("a plain Pod does not inject: {e}"),
            )
        })
    }

    /// The template rendered for a Pod (`metadata`, `spec`) of `owner`.
    pub fn render(&self, metadata: &Value, spec: &Value, owner: Owner) -> Result<Sidecar, String> {
        // The whole input is the key, so a hit can only be the same Pod.
        let key = serde_json::to_string(&(metadata, spec, owner.workload, owner.namespace))
            .map_err(|e| e.to_string())?;
        if let Some(hit) = self
            .renders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok((**hit).clone());
        }
        let sidecar = self.template.render(&Inputs {
            metadata,
            spec,
            deployment_name: owner.workload,
            namespace: owner.namespace,
            proxy_config: &self.proxy_config,
            mesh_config: &self.mesh_config,
            values: &self.values,
        })?;
        let entry = Arc::new(sidecar.clone());
        let evicted = {
            let mut renders = self.renders.lock().unwrap_or_else(|p| p.into_inner());
            let evicted = if renders.len() >= RENDER_CACHE {
                let any = renders.keys().next().cloned();
                any.and_then(|k| renders.remove(&k))
            } else {
                None
            };
            renders.insert(key, entry);
            evicted
        };
        // Freed after the lock: no other review waits on it.
        drop(evicted);
        Ok(sidecar)
    }

    /// A value under `.Values`, by dotted path.
    pub fn value(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(&self.values, |v, key| v.get(key))
    }
}

fn read(path: Option<&Path>, default: &str) -> Result<(String, String), ConfigError> {
    match path {
        None => Ok(("built-in".to_string(), default.to_string())),
        Some(path) => std::fs::read_to_string(path)
            .map(|text| (path.display().to_string(), text))
            .map_err(|source| ConfigError::Read {
                file: path.to_path_buf(),
                source,
            }),
    }
}

fn yaml_value(text: &str, name: &str) -> Result<Value, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError::invalid(name, "(yaml)", e))?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => Err(ConfigError::invalid(name, "(top level)", "expected a map")),
    }
}

/// Deep merge, `over` winning; as Helm layers a values file over the chart's.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        // An empty key (`global:` with nothing under it) takes nothing away.
        (_, Value::Null) => {}
        (base, over) => *base = over,
    }
}

/// Istio 1.4's `ProxyConfig` defaults, for the fields the template reads.
fn proxy_defaults() -> Value {
    serde_json::json!({
        "configPath": "/etc/istio/proxy",
        "binaryPath": "/usr/local/bin/envoy",
        "serviceCluster": "istio-proxy",
        "drainDuration": "45s",
        "parentShutdownDuration": "1m0s",
        "discoveryAddress": "istio-pilot.istio-system:15010",
        "connectTimeout": "10s",
        "proxyAdminPort": 15000,
        "controlPlaneAuthPolicy": "NONE",
        "concurrency": 2,
        "statusPort": 15020,
        "interceptionMode": "REDIRECT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(inject: &str, values: &str, mesh: &str) -> Result<Config, ConfigError> {
        Config::from_texts(
            &("inject.yaml".into(), inject.into()),
            &("values.yaml".into(), values.into()),
            &("mesh.yaml".into(), mesh.into()),
        )
    }

    #[test]
    fn the_shipped_defaults_load() {
        let config = Config::builtin();
        assert_eq!(config.policy, Policy::Enabled);
        assert_eq!(
            config.value("global.proxy.statusPort"),
            Some(&serde_json::json!(15020))
        );
        assert_eq!(config.proxy_config["interceptionMode"], "REDIRECT");
    }

    #[test]
    fn values_and_mesh_config_layer_over_the_defaults() {
        let config = texts(
            "template: ''\npolicy: disabled\n",
            "global:\n  proxy:\n    statusPort: 15021\n",
            "defaultConfig:\n  discoveryAddress: pilot.example:15010\nsomeFieldFromIstio: 1\n",
        )
        .unwrap();
        assert_eq!(config.policy, Policy::Disabled);
        assert_eq!(config.value("global.proxy.statusPort").unwrap(), 15021);
        // Untouched defaults stay.
        assert_eq!(config.value("global.proxy.image").unwrap(), "proxy");
        assert_eq!(
            config.proxy_config["discoveryAddress"],
            "pilot.example:15010"
        );
        assert_eq!(config.proxy_config["proxyAdminPort"], 15000);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = texts("template: ''\npolicy: sometimes\n", "", "")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("inject.yaml: policy: unknown variant `sometimes`"),
            "{e}"
        );
        let e = texts("template: ''\nneverInjectSelectors: []\n", "", "")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("unknown field `neverInjectSelectors`"), "{e}");
        let e = texts(
            "template: ''\nneverInjectSelector:\n- matchExpressions:\n  - {key: a, operator: Near}\n",
            "",
            "",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.starts_with("inject.yaml: neverInjectSelector[0]: "),
            "{e}"
        );
        let e = texts("template: '{{ if }}'\n", "", "")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("inject.yaml: template: "), "{e}");
        let e = texts("template: ''\n", "", "proxyHttpPort: 70000\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("mesh.yaml: mesh: proxyHttpPort"), "{e}");
        let e = texts("template: ''\n", "- a\n", "")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(e, "values.yaml: (top level): expected a map");
    }
}
