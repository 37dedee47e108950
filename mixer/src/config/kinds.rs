//! The specs of Mixer's kinds (Istio's `policy.v1beta1` messages and the
//! proxy-side `QuotaSpec`/`QuotaSpecBinding`), strict about unknown fields.
//! Istio's protos took both camelCase and snake_case names; so do these.

use std::collections::BTreeMap;

use api::duration::IstioDuration;
use serde::Deserialize;
use serde_json::Value as Json;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HandlerSpec {
    #[serde(default, alias = "compiled_adapter")]
    pub compiled_adapter: String,
    #[serde(default)]
    pub adapter: String,
    #[serde(default)]
    pub params: Json,
    #[serde(default)]
    pub connection: Option<Connection>,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Connection {
    pub address: String,
    #[serde(default)]
    pub timeout: Option<IstioDuration>,
    /// Accepted as Istio's config had it; TLS to adapters is not offered yet.
    #[serde(default)]
    pub authentication: Option<Json>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceSpec {
    #[serde(default, alias = "compiled_template")]
    pub compiled_template: String,
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub params: Json,
    #[serde(default, alias = "attribute_bindings")]
    pub attribute_bindings: BTreeMap<String, String>,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default, rename = "match")]
    pub match_: String,
    #[serde(default)]
    pub actions: Vec<ActionSpec>,
    #[serde(default, alias = "request_header_operations")]
    pub request_header_operations: Vec<HeaderOperationSpec>,
    #[serde(default, alias = "response_header_operations")]
    pub response_header_operations: Vec<HeaderOperationSpec>,
    /// Accepted; report sampling comes with telemetry.
    #[serde(default)]
    pub sampling: Option<Json>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionSpec {
    pub handler: String,
    #[serde(default)]
    pub instances: Vec<String>,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HeaderOperation {
    #[default]
    Replace,
    Remove,
    Append,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperationSpec {
    pub name: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub operation: HeaderOperation,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeManifestSpec {
    #[serde(default)]
    pub revision: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeInfo>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeInfo {
    #[serde(default)]
    pub description: String,
    #[serde(alias = "value_type")]
    pub value_type: String,
}

/// Istio 1.1+'s out-of-tree template: its descriptor, base64.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateSpec {
    #[serde(default)]
    pub descriptor: String,
}

/// Istio 1.1+'s out-of-tree adapter: which templates it serves.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdapterSpec {
    #[serde(default)]
    pub description: String,
    #[serde(default, alias = "session_based")]
    pub session_based: bool,
    #[serde(default)]
    pub templates: Vec<String>,
    #[serde(default)]
    pub config: String,
}

/// Which quotas a request to a service is charged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaSpecSpec {
    #[serde(default)]
    pub rules: Vec<QuotaRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaRule {
    /// Any one match suffices; none matches every request.
    #[serde(default, rename = "match")]
    pub match_: Vec<AttributeMatch>,
    #[serde(default)]
    pub quotas: Vec<QuotaCharge>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeMatch {
    /// Every clause must hold.
    #[serde(default)]
    pub clause: BTreeMap<String, StringMatch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaCharge {
    pub quota: String,
    #[serde(default = "one")]
    pub charge: i64,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaSpecBindingSpec {
    #[serde(default)]
    pub services: Vec<IstioService>,
    #[serde(default, alias = "quota_specs")]
    pub quota_specs: Vec<QuotaSpecReference>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioService {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub domain: String,
    /// A full host name; `*` binds every service.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaSpecReference {
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}
