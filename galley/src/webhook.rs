//! The validating admission webhook: `/admitpilot` (Pilot's kinds) and
//! `/admitmixer` (Mixer's), AdmissionReview `admission.k8s.io/v1` and
//! `v1beta1`, answered in the version asked. An object is judged by the
//! same checks the directory and Kubernetes sources apply; a Mixer object
//! together with the Mixer config being served, so a rule naming a handler
//! that does not exist is refused before it reaches Mixer.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::metrics::{Metrics, labels};
use crate::snapshot::Snapshot;
use crate::validate::{self, Checked, Resource};

/// Which of the two webhooks was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Pilot,
    Mixer,
}

impl Endpoint {
    fn serves(self, api_version: &str) -> bool {
        let mixer = api_version.starts_with("config.istio.io/")
            || api_version.starts_with("policy.istio.io/");
        (self == Endpoint::Mixer) == mixer
    }

    fn name(self) -> &'static str {
        match self {
            Endpoint::Pilot => "pilot.validation.istio.io",
            Endpoint::Mixer => "mixer.validation.istio.io",
        }
    }
}

pub use mesh::webhook::Malformed;

/// The answer to one AdmissionReview body, in the request's API version.
pub fn review(
    endpoint: Endpoint,
    served: &Snapshot,
    metrics: &Metrics,
    body: &[u8],
) -> Result<Value, Malformed> {
    let request = mesh::webhook::read_review(body)?;
    let answer = |response: Value| request.answer(response);
    // Deleting is never refused: a broken object must be removable.
    if request.operation == "DELETE" {
        return Ok(answer(json!({"allowed": true})));
    }
    let mut object = request
        .object
        .clone()
        .filter(Value::is_object)
        .ok_or_else(|| Malformed("request.object: missing or not an object".into()))?;
    if object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
        && let Some(ns) = request.namespace.clone().filter(|n| !n.is_empty())
    {
        object["metadata"]["namespace"] = json!(ns);
    }
    let api_version = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let resource = object["kind"].as_str().unwrap_or_default().to_lowercase();
    let verdict = if endpoint.serves(&api_version) {
        judge(object, served)
    } else {
        Err(format!(
            "{api_version} objects are not validated by {}",
            endpoint.name()
        ))
    };
    match verdict {
        Ok(()) => {
            metrics
                .validation_passed
                .get_or_create(&labels(&[("resource", &resource)]))
                .inc();
            Ok(answer(json!({"allowed": true})))
        }
        Err(message) => {
            metrics
                .validation_failed
                .get_or_create(&labels(&[("resource", &resource)]))
                .inc();
            Ok(answer(json!({
                "allowed": false,
                "status": {"code": 400, "reason": "Invalid", "message": message},
            })))
        }
    }
}

/// Whether `object` may be stored; the reason when not.
fn judge(object: Value, served: &Snapshot) -> Result<(), String> {
    let value = serde_yaml::to_value(&object).map_err(|e| format!("object: {e}"))?;
    match validate::check_value(value, "request.object") {
        Checked::Valid(resource) if resource.typed.is_some() => Ok(()),
        Checked::Valid(resource) => judge_mixer(&resource, served),
        Checked::Invalid { errors, .. } => Err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
        Checked::Other => Ok(()),
    }
}

/// A Mixer object checked with everything else Mixer is being served, the
/// object's earlier version replaced by this one.
fn judge_mixer(resource: &Resource, served: &Snapshot) -> Result<(), String> {
    let key = resource.key();
    let mut all: Vec<&Resource> = served
        .resources()
        .filter(|r| r.typed.is_none())
        .filter(|r| !(r.collection == resource.collection && r.key() == key))
        .collect();
    all.push(resource);
    let label = resource.label();
    let errors: Vec<String> = validate::check_mixer(&all)
        .into_iter()
        .filter(|e| e.object == label)
        .map(|e| e.to_string())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Shared by the HTTPS handlers.
pub struct State {
    pub snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    pub metrics: Metrics,
}
