//! The change itself, on a Pod or a workload's Pod template as JSON: the
//! rendered containers, init containers, volumes and pull secrets added,
//! probes rewritten, and `sidecar.istio.io/status` recording what was added
//! so that it can be taken out again before a re-injection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::policy::{self, Decision, PodFacts};
use crate::probe::{self, PROBERS_ENV};
use crate::{PROXY_CONTAINER, STATUS_ANNOTATION};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InjectError {
    #[error("{field}: {message}")]
    Pod { field: String, message: String },
    #[error("injection template: {0}")]
    Template(String),
}

fn pod_error(field: &str, message: impl Into<String>) -> InjectError {
    InjectError::Pod {
        field: field.into(),
        message: message.into(),
    }
}

/// The value of `sidecar.istio.io/status`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    pub version: String,
    pub init_containers: Vec<String>,
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub image_pull_secrets: Vec<String>,
}

/// Where the Pod lives and which workload it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub namespace: &'a str,
    /// The Deployment (or other workload) name; the template names the
    /// proxy's service cluster after it when the Pod has no `app` label.
    pub workload: &'a str,
}

/// Whether `pod` is to be injected, by the config's policy.
pub fn decision(config: &Config, pod: &Value, namespace: &str) -> Decision {
    let labels = string_map(&pod["metadata"]["labels"]);
    let annotations = string_map(&pod["metadata"]["annotations"]);
    policy::decide(
        config,
        &PodFacts {
            namespace,
            host_network: pod["spec"]["hostNetwork"].as_bool().unwrap_or(false),
            labels: &labels,
            annotations: &annotations,
        },
    )
}

/// Adds the sidecar to `pod` (`{metadata, spec}`), whatever the policy says:
/// callers decide first.
pub fn inject(config: &Config, pod: &mut Value, owner: Owner) -> Result<Status, InjectError> {
    if !pod["spec"].is_object() {
        return Err(pod_error("spec", "expected an object"));
    }
    if !pod["spec"]["containers"].is_array() {
        return Err(pod_error("spec.containers", "expected a list"));
    }
    if pod.get("metadata").is_none_or(Value::is_null) {
        pod["metadata"] = json!({});
    }
    if !pod["metadata"].is_object() {
        return Err(pod_error("metadata", "expected an object"));
    }
    check_annotations(config, &pod["metadata"]["annotations"])?;
    let mut sidecar = config
        .render(&pod["metadata"], &pod["spec"], owner)
        .map_err(InjectError::Template)?;

    let rewrite = sidecar.rewrites_probes().map_err(InjectError::Template)?;
    if rewrite
        && let Some(proxy) = sidecar
            .containers
            .iter_mut()
            .find(|c| c["name"] == PROXY_CONTAINER)
    {
        let status_port = status_port(config, &pod["metadata"])?;
        let containers = pod["spec"]["containers"]
            .as_array_mut()
            .ok_or_else(|| pod_error("spec.containers", "expected a list"))?;
        let probers = probe::rewrite(containers, status_port);
        if !probers.is_empty() {
            let env = proxy
                .as_object_mut()
                .ok_or_else(|| InjectError::Template("containers: expected objects".into()))?
                .entry("env")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .ok_or_else(|| {
                    InjectError::Template(format!("{PROXY_CONTAINER}.env: expected a list"))
                })?;
            // Without them the agent would answer 404 to probes just rewritten.
            env.retain(|e| e["name"] != PROBERS_ENV);
            env.push(json!({"name": PROBERS_ENV, "value": serde_json::to_string(&probers).unwrap_or_default()}));
        }
    }

    let spec = pod["spec"]
        .as_object_mut()
        .ok_or_else(|| pod_error("spec", "expected an object"))?;
    // A pull secret the Pod names already is the Pod's: neither added twice
    // nor taken away by a later strip.
    let present = names(
        spec.get("imagePullSecrets")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice),
    );
    sidecar.image_pull_secrets.retain(|s| {
        !s["name"]
            .as_str()
            .is_some_and(|n| present.iter().any(|p| p == n))
    });
    let status = Status {
        version: config.version.clone(),
        init_containers: names(&sidecar.init_containers),
        containers: names(&sidecar.containers),
        volumes: names(&sidecar.volumes),
        image_pull_secrets: names(&sidecar.image_pull_secrets),
    };
    append(spec, "initContainers", sidecar.init_containers)?;
    append(spec, "containers", sidecar.containers)?;
    append(spec, "volumes", sidecar.volumes)?;
    append(spec, "imagePullSecrets", sidecar.image_pull_secrets)?;
    if config.value("global.sds.enabled") == Some(&Value::Bool(true)) {
        // The projected token is readable by the Pod's fsGroup only.
        let security = spec.entry("securityContext").or_insert_with(|| json!({}));
        if let Some(security) = security.as_object_mut() {
            security.entry("fsGroup").or_insert(json!(1337));
        }
    }

    let metadata = pod["metadata"]
        .as_object_mut()
        .ok_or_else(|| pod_error("metadata", "expected an object"))?;
    let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
    if annotations.is_null() {
        *annotations = json!({});
    }
    let annotations = annotations
        .as_object_mut()
        .ok_or_else(|| pod_error("metadata.annotations", "expected a map"))?;
    for (k, v) in &config.injected_annotations {
        annotations.entry(k.clone()).or_insert_with(|| json!(v));
    }
    annotations.insert(
        STATUS_ANNOTATION.into(),
        json!(serde_json::to_string(&status).unwrap_or_default()),
    );
    Ok(status)
}

/// Takes out what an earlier injection recorded in its status annotation,
/// probes restored; `false` when the Pod carried none.
pub fn strip(pod: &mut Value) -> Result<bool, InjectError> {
    let Some(text) = pod["metadata"]["annotations"][STATUS_ANNOTATION].as_str() else {
        return Ok(false);
    };
    let status: Status = serde_json::from_str(text).map_err(|e| {
        pod_error(
            &format!("metadata.annotations[{STATUS_ANNOTATION}]"),
            e.to_string(),
        )
    })?;
    let probers = match pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == PROXY_CONTAINER)
        .flat_map(|c| c["env"].as_array().into_iter().flatten())
        .find(|e| e["name"] == PROBERS_ENV)
    {
        None => None,
        // Left rewritten, the app's probes would be taken for its originals.
        Some(e) => Some(
            serde_json::from_str::<Map<String, Value>>(e["value"].as_str().unwrap_or_default())
                .map_err(|e| {
                    pod_error(
                        &format!("{PROXY_CONTAINER}.env[{PROBERS_ENV}]"),
                        e.to_string(),
                    )
                })?,
        ),
    };
    if let Some(spec) = pod["spec"].as_object_mut() {
        remove_named(spec, "initContainers", &status.init_containers);
        remove_named(spec, "containers", &status.containers);
        remove_named(spec, "volumes", &status.volumes);
        remove_named(spec, "imagePullSecrets", &status.image_pull_secrets);
        if let (Some(probers), Some(containers)) = (
            probers,
            spec.get_mut("containers").and_then(Value::as_array_mut),
        ) {
            probe::restore(containers, &probers);
        }
    }
    if let Some(annotations) = pod["metadata"]["annotations"].as_object_mut() {
        annotations.remove(STATUS_ANNOTATION);
    }
    Ok(true)
}

/// The annotations istio-init and the agent read, checked now: a Pod that
/// would never start is denied with the reason instead.
fn check_annotations(config: &Config, annotations: &Value) -> Result<(), InjectError> {
    let field = |name: &str| format!("metadata.annotations[{name}]");
    let mode = annotations["sidecar.istio.io/interceptionMode"]
        .as_str()
        .or(config.proxy_config["interceptionMode"].as_str())
        .unwrap_or("REDIRECT");
    if mode != "REDIRECT" {
        return Err(pod_error(
            &field("sidecar.istio.io/interceptionMode"),
            format!("{mode:?}: Trireme's sidecars capture with REDIRECT only"),
        ));
    }
    for name in [
        "traffic.sidecar.istio.io/includeInboundPorts",
        "traffic.sidecar.istio.io/excludeInboundPorts",
        "traffic.sidecar.istio.io/excludeOutboundPorts",
    ] {
        if let Some(list) = annotations[name].as_str() {
            for port in list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty() && *p != "*")
            {
                if port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
                    return Err(pod_error(&field(name), format!("{port:?} is not a port")));
                }
            }
        }
    }
    for name in [
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    ] {
        if let Some(list) = annotations[name].as_str() {
            for cidr in list
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && *c != "*")
            {
                let (ip, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
                let ok = ip.parse::<std::net::Ipv4Addr>().is_ok()
                    && len.parse::<u8>().is_ok_and(|l| l <= 32);
                if !ok {
                    return Err(pod_error(
                        &field(name),
                        format!("{cidr:?} is not an IPv4 address or CIDR"),
                    ));
                }
            }
        }
    }
    if let Some(port) = annotations["status.sidecar.istio.io/port"].as_str()
        && port.parse::<u16>().ok().filter(|p| *p > 0).is_none()
    {
        return Err(pod_error(
            &field("status.sidecar.istio.io/port"),
            format!("{port:?} is not a port"),
        ));
    }
    Ok(())
}

fn status_port(config: &Config, metadata: &Value) -> Result<u16, InjectError> {
    let field = "metadata.annotations[status.sidecar.istio.io/port]";
    match metadata["annotations"]["status.sidecar.istio.io/port"].as_str() {
        Some(s) => s
            .parse()
            .map_err(|_| pod_error(field, format!("{s:?} is not a port"))),
        None => config
            .value("global.proxy.statusPort")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| InjectError::Template("global.proxy.statusPort is not a port".into())),
    }
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i["name"].as_str().map(String::from))
        .collect()
}

fn append(
    spec: &mut Map<String, Value>,
    field: &str,
    items: Vec<Value>,
) -> Result<(), InjectError> {
    if items.is_empty() {
        return Ok(());
    }
    let list = spec.entry(field).or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    let list = list
        .as_array_mut()
        .ok_or_else(|| pod_error(&format!("spec.{field}"), "expected a list"))?;
    for item in items {
        if let Some(name) = item["name"].as_str()
            && list.iter().any(|existing| existing["name"] == name)
        {
            return Err(pod_error(
                &format!("spec.{field}"),
                format!("the Pod already has {name:?}, which injection adds"),
            ));
        }
        list.push(item);
    }
    Ok(())
}

fn remove_named(spec: &mut Map<String, Value>, field: &str, names: &[String]) {
    if let Some(list) = spec.get_mut(field).and_then(Value::as_array_mut) {
        list.retain(|item| {
            !item["name"]
                .as_str()
                .is_some_and(|n| names.iter().any(|x| x == n))
        });
        if list.is_empty() {
            spec.remove(field);
        }
    }
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect()
}
