//! `meshctl kube-inject`: the sidecar added to every Pod and Pod template of
//! a multi-document YAML stream, by the same policy and template as the
//! webhook. Other kinds pass through. A document injected before is taken
//! back to its original first, so running it twice changes nothing.

use serde_json::Value;

use crate::config::Config;
use crate::inject::{self, InjectError, Owner};
use crate::policy::Decision;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("document {index}: {source}")]
    Yaml {
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {index} ({object}): {source}")]
    Inject {
        index: usize,
        object: String,
        #[source]
        source: InjectError,
    },
}

/// Where a kind keeps its Pod template.
fn pod_template(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

/// Every document of `input`, injected where its policy says so. Documents
/// left as they are come out as they went in, comments and all; injected
/// ones are written anew.
pub fn inject_documents(config: &Config, input: &str) -> Result<String, WorkloadError> {
    let mut out = Vec::new();
    for (index, text) in documents(input).into_iter().enumerate() {
        let index = index + 1;
        let mut doc: Value =
            serde_yaml::from_str(text).map_err(|source| WorkloadError::Yaml { index, source })?;
        if doc.is_null() {
            continue;
        }
        yaml11_modes(&mut doc);
        let injected =
            inject_document(config, &mut doc).map_err(|source| WorkloadError::Inject {
                index,
                object: format!(
                    "{}/{}",
                    doc["kind"].as_str().unwrap_or("?"),
                    doc["metadata"]["name"].as_str().unwrap_or("?")
                ),
                source,
            })?;
        if injected {
            out.push(
                serde_yaml::to_string(&doc)
                    .map_err(|source| WorkloadError::Yaml { index, source })?,
            );
        } else {
            let mut text = text.to_string();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            out.push(text);
        }
    }
    Ok(out.join("---\n"))
}

/// The documents of a YAML stream, as text, split at `---` lines.
fn documents(input: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in input.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" {
            docs.push(&input[start..offset]);
            start = offset + line.len();
        } else if bare.starts_with("--- ") || bare.starts_with("---\t") {
            docs.push(&input[start..offset]);
            // `--- {a: 1}`: the document starts on the marker's line.
            start = offset + 4;
        }
        offset += line.len();
    }
    docs.push(&input[start..]);
    docs.retain(|d| !d.trim().is_empty());
    docs
}

/// Kubernetes reads manifests as YAML 1.1, where file modes such as
/// `defaultMode: 0644` are octal; YAML 1.2 reads them otherwise.
fn yaml11_modes(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if matches!(k.as_str(), "defaultMode" | "mode")
                    && let Some(octal) = v
                        .as_str()
                        .filter(|s| s.len() > 1 && s.starts_with('0'))
                        .and_then(|s| u32::from_str_radix(s, 8).ok())
                {
                    *v = Value::from(octal);
                } else {
                    yaml11_modes(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(yaml11_modes),
        _ => {}
    }
}

/// Injects one object in place; `true` when it changed (a sidecar added, or
/// an earlier one taken out).
pub fn inject_document(config: &Config, doc: &mut Value) -> Result<bool, InjectError> {
    let Some(path) = doc["kind"].as_str().and_then(pod_template) else {
        return Ok(false);
    };
    let namespace = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let workload = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut pod = &mut *doc;
    for (depth, key) in path.iter().enumerate() {
        pod = pod.get_mut(*key).ok_or_else(|| InjectError::Pod {
            field: path[..=depth].join("."),
            message: "missing".into(),
        })?;
    }
    for field in ["labels", "annotations"] {
        if let Some((key, value)) = pod["metadata"][field]
            .as_object()
            .and_then(|m| m.iter().find(|(_, v)| !v.is_string()))
        {
            return Err(InjectError::Pod {
                field: format!("metadata.{field}[{key}]"),
                message: format!(
                    "{value} is not a string (Kubernetes takes only strings: quote it)"
                ),
            });
        }
    }
    let stripped = inject::strip(pod)?;
    if inject::decision(config, pod, &namespace) != Decision::Inject {
        return Ok(stripped);
    }
    inject::inject(
        config,
        pod,
        Owner {
            namespace: &namespace,
            workload: &workload,
        },
    )?;
    Ok(true)
}
