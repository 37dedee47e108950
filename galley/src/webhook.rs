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
    // The kind's plural for known kinds only: the body is the caller's, and
    // a metric label per string it sends would grow without end.
    let resource =
        api::mcp::collection_of(&api_version, object["kind"].as_str().unwrap_or_default())
            .and_then(|c| c.name.rsplit('/').next())
            .unwrap_or("other")
            .to_string();
    let verdict = if endpoint.serves(&api_version) {
        judge(object, served)
    } else {
        Err(format!(
            "{api_version} objects are not validated by {}",
            endpoint.name()
        ))
    };
    match verdict {
        Ok(warnings) => {
            metrics
                .validation_passed
                .get_or_create(&labels(&[("resource", &resource)]))
                .inc();
            if warnings.is_empty() {
                Ok(answer(json!({"allowed": true})))
            } else {
                Ok(answer(json!({"allowed": true, "warnings": warnings})))
            }
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

/// Whether `object` may be stored (with warnings to show), or why not.
fn judge(object: Value, served: &Snapshot) -> Result<Vec<String>, String> {
    let value = serde_yaml::to_value(&object).map_err(|e| format!("object: {e}"))?;
    match validate::check_value(value, "request.object") {
        Checked::Valid(resource) if resource.typed.is_some() => Ok(Vec::new()),
        Checked::Valid(resource) => judge_mixer(&resource, served),
        Checked::Invalid { errors, .. } => Err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
        Checked::Workload(_) | Checked::Other => Ok(Vec::new()),
    }
}

/// A Mixer object checked with everything else Mixer is being served, the
/// object's earlier version replaced by this one. What it names that is not
/// served (yet) is a warning, not a refusal: `kubectl apply` of a handler,
/// an instance and a rule admits them one by one, faster than Galley sees
/// them stored; the sources refuse the rule if they never appear.
fn judge_mixer(resource: &Resource, served: &Snapshot) -> Result<Vec<String>, String> {
    let key = resource.key();
    let mut all: Vec<&Resource> = served
        .resources()
        .filter(|r| r.typed.is_none())
        .filter(|r| !(r.collection == resource.collection && r.key() == key))
        .collect();
    all.push(resource);
    let label = resource.label();
    let (references, errors): (Vec<_>, Vec<_>) = validate::check_mixer(&all)
        .into_iter()
        .filter(|e| e.object == label)
        .partition(|e| e.field.ends_with(".handler") || e.field.contains(".instances["));
    if errors.is_empty() {
        Ok(references.iter().map(ToString::to_string).collect())
    } else {
        Err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// Shared by the HTTPS handlers.
pub struct State {
    pub snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    pub metrics: Metrics,
}
