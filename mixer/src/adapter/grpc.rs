//! Out-of-process adapters (Istio 1.1+): a handler whose
//! `connection.address` names a gRPC service that serves a template's
//! `Handle…Service`. Mixer sends each instance with the handler's params
//! and a deduplication id, and takes the adapter's answer as its own.

use std::time::Duration;

use api::istio::policy::v1beta1 as policy;
use api::listentry::{
    HandleListEntryRequest, InstanceMsg,
    handle_list_entry_service_client::HandleListEntryServiceClient,
};
use async_trait::async_trait;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::{CheckResult, Handler, Status};
use crate::attribute::Value;
use crate::attribute::compressed::to_timestamp;
use crate::template::{Instance, Template};

pub struct Remote {
    endpoint: Endpoint,
    /// Made on first use, inside the runtime: building a handler (when config
    /// is only being validated, say) needs none.
    channel: std::sync::OnceLock<Channel>,
    address: String,
    timeout: Duration,
    /// The handler's params. Istio packed them as the adapter's own config
    /// message from its descriptor; we send them as a `google.protobuf.Struct`,
    /// which an adapter decodes without knowing our descriptors.
    config: prost_types::Any,
}

impl Remote {
    pub fn new(
        address: &str,
        timeout: Duration,
        params: &serde_json::Value,
    ) -> Result<Remote, String> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| format!("{address:?} is not a host:port address: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout);
        Ok(Remote {
            endpoint,
            channel: std::sync::OnceLock::new(),
            address: address.to_string(),
            timeout,
            config: prost_types::Any {
                type_url: "type.googleapis.com/google.protobuf.Struct".into(),
                value: prost::Message::encode_to_vec(&to_struct(params)),
            },
        })
    }
}

#[async_trait]
impl Handler for Remote {
    async fn check(&self, instance: &Instance) -> CheckResult {
        if instance.template != Template::ListEntry {
            return CheckResult::once(Status::new(
                Code::Unimplemented,
                format!(
                    "out-of-process {} is not supported",
                    instance.template.name()
                ),
            ));
        }
        let request = HandleListEntryRequest {
            instance: Some(InstanceMsg {
                name: instance.name.to_string(),
                value: instance.value("value").map(wire_value),
            }),
            adapter_config: Some(self.config.clone()),
            dedup_id: String::new(),
        };
        let mut client = HandleListEntryServiceClient::new(
            self.channel
                .get_or_init(|| self.endpoint.connect_lazy())
                .clone(),
        );
        let answer = tokio::time::timeout(self.timeout, client.handle_list_entry(request)).await;
        match answer {
            Ok(Ok(response)) => {
                let r = response.into_inner();
                let status = r.status.unwrap_or_default();
                CheckResult {
                    status: Status::new(Code::from_i32(status.code), status.message),
                    // An adapter cannot make an answer outlive Go's longest duration.
                    valid_duration: r
                        .valid_duration
                        .and_then(|d| Duration::try_from(d).ok())
                        .unwrap_or_default()
                        .min(api::duration::MAX),
                    valid_use_count: r.valid_use_count.max(0),
                }
            }
            Ok(Err(status)) => CheckResult::once(Status::new(
                Code::Unavailable,
                format!("adapter at {}: {}", self.address, status.message()),
            )),
            Err(_) => CheckResult::once(Status::new(
                Code::DeadlineExceeded,
                format!(
                    "adapter at {} did not answer within {:?}",
                    self.address, self.timeout
                ),
            )),
        }
    }
}

fn wire_value(v: &Value) -> policy::Value {
    use policy::value::Value as W;
    let inner = match v {
        Value::String(s) => W::StringValue(s.to_string()),
        Value::Int64(i) => W::Int64Value(*i),
        Value::Double(d) => W::DoubleValue(*d),
        Value::Bool(b) => W::BoolValue(*b),
        Value::IpAddress(ip) => W::IpAddressValue(policy::IpAddress {
            value: match ip {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            },
        }),
        Value::Timestamp(t) => W::TimestampValue(policy::TimeStamp {
            value: Some(to_timestamp(*t)),
        }),
        Value::Duration(d) => W::DurationValue(policy::Duration {
            value: prost_types::Duration::try_from(*d).ok(),
        }),
        Value::EmailAddress(s) => W::EmailAddressValue(policy::EmailAddress {
            value: s.to_string(),
        }),
        Value::DnsName(s) => W::DnsNameValue(policy::DnsName {
            value: s.to_string(),
        }),
        Value::Uri(s) => W::UriValue(policy::Uri {
            value: s.to_string(),
        }),
        // Templates never declare a map where a single value goes.
        Value::StringMap(_) => W::StringValue(v.to_string()),
    };
    policy::Value { value: Some(inner) }
}

/// JSON params as a protobuf `Struct`.
pub fn to_struct(json: &serde_json::Value) -> prost_types::Struct {
    match to_proto(json).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        _ => prost_types::Struct::default(),
    }
}

fn to_proto(json: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_proto).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
