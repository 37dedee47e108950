//! The mutating admission webhook: AdmissionReview (`admission.k8s.io/v1`
//! and `v1beta1`) in, the review answered with a JSON patch out. The answer
//! is a pure function of the review and the config ([`review`]); the HTTPS
//! server around it is in [`server`].

pub mod server;

use base64::Engine;
use serde_json::{Value, json};

use crate::config::Config;
use crate::inject::{self, Owner};
use crate::metrics::{Metrics, count};
use crate::policy::Decision;

pub use mesh::webhook::Malformed;

/// The answer to one AdmissionReview body, in the request's API version.
pub fn review(config: &Config, metrics: &Metrics, body: &[u8]) -> Result<Value, Malformed> {
    metrics.requests.inc();
    let request = mesh::webhook::read_review(body).inspect_err(|_| {
        count(&metrics.failure, "malformed");
    })?;
    let malformed = |why: String| {
        count(&metrics.failure, "malformed");
        Malformed(why)
    };
    let answer = |response: Value| request.answer(response);
    if request.kind.as_ref().is_some_and(|k| k.kind != "Pod") {
        count(&metrics.skip, "not a Pod");
        return Ok(answer(json!({"allowed": true})));
    }
    let original = request
        .object
        .clone()
        .filter(Value::is_object)
        .ok_or_else(|| malformed("request.object: missing or not an object".into()))?;
    let namespace = request
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| original["metadata"]["namespace"].as_str().map(String::from))
        .unwrap_or_else(|| "default".into());

    if let Decision::Skip(why) = inject::decision(config, &original, &namespace) {
        count(&metrics.skip, why);
        return Ok(answer(json!({"allowed": true})));
    }
    let mut pod = original.clone();
    let workload = workload_name(&original);
    match inject::inject(
        config,
        &mut pod,
        Owner {
            namespace: &namespace,
            workload: &workload,
        },
    ) {
        Ok(_) => {
            metrics.success.inc();
            let patch = json_patch::diff(&original, &pod);
            let patch = serde_json::to_vec(&patch).unwrap_or_default();
            Ok(answer(json!({
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch),
            })))
        }
        Err(e) => {
            count(&metrics.failure, "injection");
            let name = original["metadata"]["name"]
                .as_str()
                .or(original["metadata"]["generateName"].as_str())
                .unwrap_or_default();
            Ok(answer(json!({
                "allowed": false,
                "status": {"code": 500, "message": format!("injecting the sidecar into Pod {namespace}/{name}: {e}")},
            })))
        }
    }
}

/// The workload a Pod belongs to, as its name shows it: a ReplicaSet's Pods
/// are `<deployment>-<pod-template-hash>-<random>`, created with only a
/// generateName.
fn workload_name(pod: &Value) -> String {
    let meta = &pod["metadata"];
    if let Some(name) = meta["name"].as_str().filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let base = meta["generateName"]
        .as_str()
        .unwrap_or_default()
        .trim_end_matches('-');
    match meta["labels"]["pod-template-hash"].as_str() {
        Some(hash) => base
            .strip_suffix(hash)
            .map(|b| b.trim_end_matches('-'))
            .unwrap_or(base)
            .to_string(),
        None => base.to_string(),
    }
}
