//! The Mesh Configuration Protocol (`istio.mcp.v1alpha1`) as Istio 1.4 spoke
//! it: the generated service and messages, the collections Galley serves,
//! and the codec between an object's spec as operators write it (YAML, read
//! as JSON) and its MCP body, Istio's own protobuf message in an `Any`.
//!
//! The codec is descriptor-driven: the Istio protos under `proto/` are
//! compiled into a descriptor set at build time, and specs go through
//! protobuf's JSON mapping, whose field names are the YAML's.

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value as Json;

pub use crate::istio::mcp::v1alpha1;

/// One collection: the kind it carries and the message its bodies hold.
#[derive(Debug, PartialEq, Eq)]
pub struct Collection {
    /// `istio/networking/v1alpha3/virtualservices`.
    pub name: &'static str,
    /// `networking.istio.io/v1alpha3`.
    pub api_version: &'static str,
    pub kind: &'static str,
    /// `istio.networking.v1alpha3.VirtualService`.
    pub message: &'static str,
    pub namespaced: bool,
}

impl Collection {
    pub fn type_url(&self) -> String {
        format!("type.googleapis.com/{}", self.message)
    }
}

/// Istio 1.4 sent adapters, templates and the legacy Mixer kinds as plain
/// structs: the collection says what they are.
const STRUCT: &str = "google.protobuf.Struct";

macro_rules! collections {
    ($( $name:literal, $api:literal, $kind:literal, $message:expr, $namespaced:literal; )*) => {
        /// Every collection Galley serves, as Istio 1.4 named them.
        pub static COLLECTIONS: &[Collection] = &[
            $( Collection { name: $name, api_version: $api, kind: $kind, message: $message, namespaced: $namespaced }, )*
        ];
    };
}

collections! {
    "istio/networking/v1alpha3/virtualservices", "networking.istio.io/v1alpha3", "VirtualService", "istio.networking.v1alpha3.VirtualService", true;
    "istio/networking/v1alpha3/destinationrules", "networking.istio.io/v1alpha3", "DestinationRule", "istio.networking.v1alpha3.DestinationRule", true;
    "istio/networking/v1alpha3/gateways", "networking.istio.io/v1alpha3", "Gateway", "istio.networking.v1alpha3.Gateway", true;
    "istio/networking/v1alpha3/serviceentries", "networking.istio.io/v1alpha3", "ServiceEntry", "istio.networking.v1alpha3.ServiceEntry", true;
    "istio/networking/v1alpha3/sidecars", "networking.istio.io/v1alpha3", "Sidecar", "istio.networking.v1alpha3.Sidecar", true;
    "istio/networking/v1alpha3/envoyfilters", "networking.istio.io/v1alpha3", "EnvoyFilter", "istio.networking.v1alpha3.EnvoyFilter", true;
    "istio/authentication/v1alpha1/policies", "authentication.istio.io/v1alpha1", "Policy", "istio.authentication.v1alpha1.Policy", true;
    "istio/authentication/v1alpha1/meshpolicies", "authentication.istio.io/v1alpha1", "MeshPolicy", "istio.authentication.v1alpha1.Policy", false;
    "istio/rbac/v1alpha1/serviceroles", "rbac.istio.io/v1alpha1", "ServiceRole", "istio.rbac.v1alpha1.ServiceRole", true;
    "istio/rbac/v1alpha1/servicerolebindings", "rbac.istio.io/v1alpha1", "ServiceRoleBinding", "istio.rbac.v1alpha1.ServiceRoleBinding", true;
    "istio/rbac/v1alpha1/rbacconfigs", "rbac.istio.io/v1alpha1", "RbacConfig", "istio.rbac.v1alpha1.RbacConfig", true;
    "istio/rbac/v1alpha1/clusterrbacconfigs", "rbac.istio.io/v1alpha1", "ClusterRbacConfig", "istio.rbac.v1alpha1.RbacConfig", false;
    "istio/security/v1beta1/authorizationpolicies", "security.istio.io/v1beta1", "AuthorizationPolicy", "istio.security.v1beta1.AuthorizationPolicy", true;
    "istio/policy/v1beta1/rules", "config.istio.io/v1alpha2", "rule", "istio.policy.v1beta1.Rule", true;
    "istio/policy/v1beta1/handlers", "config.istio.io/v1alpha2", "handler", "istio.policy.v1beta1.Handler", true;
    "istio/policy/v1beta1/instances", "config.istio.io/v1alpha2", "instance", "istio.policy.v1beta1.Instance", true;
    "istio/policy/v1beta1/attributemanifests", "config.istio.io/v1alpha2", "attributemanifest", "istio.policy.v1beta1.AttributeManifest", true;
    "istio/config/v1alpha2/adapters", "config.istio.io/v1alpha2", "adapter", STRUCT, true;
    "istio/config/v1alpha2/templates", "config.istio.io/v1alpha2", "template", STRUCT, true;
    "istio/config/v1alpha2/legacy/apikeys", "config.istio.io/v1alpha2", "apikey", STRUCT, true;
    "istio/config/v1alpha2/legacy/authorizations", "config.istio.io/v1alpha2", "authorization", STRUCT, true;
    "istio/config/v1alpha2/legacy/bypasses", "config.istio.io/v1alpha2", "bypass", STRUCT, true;
    "istio/config/v1alpha2/legacy/checknothings", "config.istio.io/v1alpha2", "checknothing", STRUCT, true;
    "istio/config/v1alpha2/legacy/circonuses", "config.istio.io/v1alpha2", "circonus", STRUCT, true;
    "istio/config/v1alpha2/legacy/cloudwatches", "config.istio.io/v1alpha2", "cloudwatch", STRUCT, true;
    "istio/config/v1alpha2/legacy/deniers", "config.istio.io/v1alpha2", "denier", STRUCT, true;
    "istio/config/v1alpha2/legacy/dogstatsds", "config.istio.io/v1alpha2", "dogstatsd", STRUCT, true;
    "istio/config/v1alpha2/legacy/edges", "config.istio.io/v1alpha2", "edge", STRUCT, true;
    "istio/config/v1alpha2/legacy/fluentds", "config.istio.io/v1alpha2", "fluentd", STRUCT, true;
    "istio/config/v1alpha2/legacy/kubernetesenvs", "config.istio.io/v1alpha2", "kubernetesenv", STRUCT, true;
    "istio/config/v1alpha2/legacy/kuberneteses", "config.istio.io/v1alpha2", "kubernetes", STRUCT, true;
    "istio/config/v1alpha2/legacy/listcheckers", "config.istio.io/v1alpha2", "listchecker", STRUCT, true;
    "istio/config/v1alpha2/legacy/listentries", "config.istio.io/v1alpha2", "listentry", STRUCT, true;
    "istio/config/v1alpha2/legacy/logentries", "config.istio.io/v1alpha2", "logentry", STRUCT, true;
    "istio/config/v1alpha2/legacy/memquotas", "config.istio.io/v1alpha2", "memquota", STRUCT, true;
    "istio/config/v1alpha2/legacy/metrics", "config.istio.io/v1alpha2", "metric", STRUCT, true;
    "istio/config/v1alpha2/legacy/noops", "config.istio.io/v1alpha2", "noop", STRUCT, true;
    "istio/config/v1alpha2/legacy/opas", "config.istio.io/v1alpha2", "opa", STRUCT, true;
    "istio/config/v1alpha2/legacy/prometheuses", "config.istio.io/v1alpha2", "prometheus", STRUCT, true;
    "istio/config/v1alpha2/legacy/quotas", "config.istio.io/v1alpha2", "quota", STRUCT, true;
    "istio/config/v1alpha2/legacy/rbacs", "config.istio.io/v1alpha2", "rbac", STRUCT, true;
    "istio/config/v1alpha2/legacy/redisquotas", "config.istio.io/v1alpha2", "redisquota", STRUCT, true;
    "istio/config/v1alpha2/legacy/reportnothings", "config.istio.io/v1alpha2", "reportnothing", STRUCT, true;
    "istio/config/v1alpha2/legacy/signalfxs", "config.istio.io/v1alpha2", "signalfx", STRUCT, true;
    "istio/config/v1alpha2/legacy/solarwindses", "config.istio.io/v1alpha2", "solarwinds", STRUCT, true;
    "istio/config/v1alpha2/legacy/stackdrivers", "config.istio.io/v1alpha2", "stackdriver", STRUCT, true;
    "istio/config/v1alpha2/legacy/statsds", "config.istio.io/v1alpha2", "statsd", STRUCT, true;
    "istio/config/v1alpha2/legacy/stdios", "config.istio.io/v1alpha2", "stdio", STRUCT, true;
    "istio/config/v1alpha2/legacy/tracespans", "config.istio.io/v1alpha2", "tracespan", STRUCT, true;
    "istio/config/v1alpha2/legacy/zipkins", "config.istio.io/v1alpha2", "zipkin", STRUCT, true;
}

pub fn collection(name: &str) -> Option<&'static Collection> {
    COLLECTIONS.iter().find(|c| c.name == name)
}

/// The collection of a kind as written in YAML. Mixer's kinds are read
/// under both of their API groups.
pub fn collection_of(api_version: &str, kind: &str) -> Option<&'static Collection> {
    let api_version = match api_version {
        "policy.istio.io/v1beta1" => "config.istio.io/v1alpha2",
        other => other,
    };
    COLLECTIONS
        .iter()
        .find(|c| c.kind == kind && c.api_version == api_version)
}

/// The collections Mixer reads.
pub fn mixer_collections() -> impl Iterator<Item = &'static Collection> {
    COLLECTIONS
        .iter()
        .filter(|c| c.api_version == "config.istio.io/v1alpha2")
}

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(
        include_bytes!(concat!(env!("OUT_DIR"), "/istio_descriptors.bin")).as_ref(),
    )
    .expect("the descriptor set built from proto/ decodes")
});

fn descriptor(name: &str) -> Result<MessageDescriptor, String> {
    POOL.get_message_by_name(name)
        .ok_or_else(|| format!("no message {name} in the compiled protos"))
}

/// A spec (as JSON) into the body of `collection`'s resources.
pub fn encode(collection: &Collection, spec: &Json) -> Result<prost_types::Any, String> {
    let json = if spec.is_null() {
        Json::Object(Default::default())
    } else {
        spec.clone()
    };
    let desc = descriptor(collection.message)?;
    let json = if collection.message == STRUCT {
        json
    } else {
        normalize(&desc, json)
    };
    let message = DynamicMessage::deserialize(desc, json).map_err(|e| e.to_string())?;
    Ok(prost_types::Any {
        type_url: collection.type_url(),
        value: message.encode_to_vec(),
    })
}

/// A body of `collection` back into the spec as written.
pub fn decode(collection: &Collection, body: &prost_types::Any) -> Result<Json, String> {
    let expected = collection.type_url();
    if body.type_url != expected {
        return Err(format!(
            "body is {}, expected {expected}",
            if body.type_url.is_empty() {
                "untyped"
            } else {
                &body.type_url
            }
        ));
    }
    let desc = descriptor(collection.message)?;
    let message = DynamicMessage::decode(desc, body.value.as_slice()).map_err(|e| e.to_string())?;
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    let mut json = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| e.to_string())?;
    integral_numbers(&mut json);
    Ok(json)
}

/// Brings a spec as Istio's YAML writes it to protobuf's JSON mapping, as
/// Istio's own parser (gogo's jsonpb) read it: durations in Go's syntax
/// (`1h`, `100ms`) become seconds (`3600s`), and a null message field
/// (`mtls:`) an empty message rather than an unset one.
fn normalize(desc: &MessageDescriptor, json: Json) -> Json {
    let Json::Object(map) = json else {
        return json;
    };
    let out = map
        .into_iter()
        .map(|(key, value)| {
            let field = desc
                .get_field_by_json_name(&key)
                .or_else(|| desc.get_field_by_name(&key));
            let Some(field) = field else {
                return (key, value);
            };
            let prost_reflect::Kind::Message(inner) = field.kind() else {
                return (key, value);
            };
            let value = if field.is_map() {
                let value_kind = inner.map_entry_value_field().kind();
                match (value, value_kind) {
                    (Json::Object(entries), prost_reflect::Kind::Message(v)) => Json::Object(
                        entries
                            .into_iter()
                            .map(|(k, e)| (k, normalize_value(&v, e)))
                            .collect(),
                    ),
                    (other, _) => other,
                }
            } else if field.is_list() {
                match value {
                    Json::Array(items) => Json::Array(
                        items
                            .into_iter()
                            .map(|v| normalize_value(&inner, v))
                            .collect(),
                    ),
                    other => other,
                }
            } else {
                normalize_value(&inner, value)
            };
            (key, value)
        })
        .collect();
    Json::Object(out)
}

fn normalize_value(desc: &MessageDescriptor, value: Json) -> Json {
    match desc.full_name() {
        "google.protobuf.Duration" => match &value {
            Json::String(text) => match crate::duration::parse(text) {
                Ok(d) if d.subsec_nanos() == 0 => Json::from(format!("{}s", d.as_secs())),
                Ok(d) => Json::from(format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())),
                // Left as written: the JSON mapping's error names the field.
                Err(_) => value,
            },
            _ => value,
        },
        name if name.starts_with("google.protobuf.") => value,
        _ => match value {
            Json::Null => Json::Object(Default::default()),
            other => normalize(desc, other),
        },
    }
}

/// `google.protobuf.Struct` holds every number as a double; numbers that are
/// whole come back as integers, as they were written (`maxAmount: 500`).
fn integral_numbers(json: &mut Json) {
    match json {
        Json::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                *json = Json::from(f as i64);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(integral_numbers),
        Json::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}
