//! Which config objects a NACK is about. Envoy's error names what it could not
//! take (a regex, a header, a cluster's setting) but not the Istio object it
//! came from; the objects of the kinds that shape the NACKed type whose own
//! values appear in the message are the ones an operator has to fix.

use api::config::{ConfigObject, Kind};
use serde_json::Value;

use crate::xds::push::PushContext;
use crate::xds::resource::XdsType;

/// Values shorter than this (`v1`, `80`, `GET`) appear in too many messages to tell anything.
const MIN_VALUE: usize = 4;

/// `Kind namespace/name` of every object that may have caused `message`.
pub fn objects(push: &PushContext, kind: XdsType, message: &str) -> Vec<String> {
    let kinds: &[Kind] = match kind {
        XdsType::Route => &[Kind::VirtualService],
        XdsType::Cluster => &[Kind::DestinationRule, Kind::ServiceEntry],
        XdsType::Listener => &[
            Kind::Sidecar,
            Kind::VirtualService,
            Kind::ServiceEntry,
            Kind::Policy,
            Kind::MeshPolicy,
            Kind::AuthorizationPolicy,
        ],
        XdsType::Endpoint => &[Kind::ServiceEntry],
    };
    kinds
        .iter()
        .filter_map(|k| push.config.objects.get(k))
        .flat_map(|m| m.values())
        .filter(|o| mentioned(o, message))
        .map(|o| o.key())
        .collect()
}

fn mentioned(object: &ConfigObject, message: &str) -> bool {
    serde_json::to_value(&object.spec).is_ok_and(|spec| any_string_in(&spec, message))
}

fn any_string_in(value: &Value, message: &str) -> bool {
    match value {
        Value::String(s) => s.len() >= MIN_VALUE && message.contains(s.as_str()),
        Value::Array(items) => items.iter().any(|v| any_string_in(v, message)),
        Value::Object(fields) => fields.values().any(|v| any_string_in(v, message)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use api::mesh::MeshConfig;

    use super::*;
    use crate::xds::fixtures::{mesh_yaml, push_from_yaml};

    #[test]
    fn the_object_whose_value_envoy_names_is_blamed() {
        let yaml = mesh_yaml(2, 1).replacen(
            "  http:\n  - route:",
            "  http:\n  - match:\n    - uri: {regex: \"/[a-z0-9_]{40}\"}\n    route:\n    - destination: {host: svc-0}\n  - route:",
            1,
        );
        let push = push_from_yaml(1, &yaml, MeshConfig::default());
        let message = "Error adding/updating route(s): regex '/[a-z0-9_]{40}' RE2 program size of 125 > max program size of 100";
        assert_eq!(
            objects(&push, XdsType::Route, message),
            ["VirtualService default/svc-0"]
        );
        assert!(objects(&push, XdsType::Cluster, message).is_empty());
        assert!(objects(&push, XdsType::Route, "something else entirely").is_empty());
    }
}
