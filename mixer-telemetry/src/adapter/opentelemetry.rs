//! The `opentelemetry` adapter (Trireme's; Istio 1.x sent spans to Zipkin or
//! Stackdriver): `tracespan` instances exported as OTLP spans over gRPC to a
//! collector, in batches, through an outbox that holds them while the
//! collector is away. Spans are grouped by the service that made them: the
//! source's for client spans, the destination's for server spans.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mixer::adapter::{Adapter, Handler, ParamsError, params};
use mixer::attribute::Value;
use mixer::template::{Instance, Template};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use serde::Deserialize;
use serde_json::Value as Json;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};

use super::outbox::{self, Names, Outbox, OutboxMetrics, Sink};

pub const METRICS: Names = Names {
    label: "endpoint",
    sent: "mixer_opentelemetry_spans_exported",
    dropped: "mixer_opentelemetry_spans_dropped",
    errors: "mixer_opentelemetry_export_errors",
    buffered: "mixer_opentelemetry_buffered_spans",
    items: "Spans",
};

pub struct OpenTelemetry {
    pub metrics: OutboxMetrics,
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    /// The collector's OTLP/gRPC address: `http://otel-collector:4317`.
    endpoint: String,
    #[serde(default = "default_timeout")]
    timeout: api::duration::IstioDuration,
    #[serde(default = "outbox::default_batch")]
    batch_size: usize,
    #[serde(default = "outbox::default_flush")]
    flush_interval: api::duration::IstioDuration,
    #[serde(default = "outbox::default_buffer")]
    buffer_size: usize,
}

fn default_timeout() -> api::duration::IstioDuration {
    api::duration::IstioDuration(Duration::from_secs(5))
}

impl Adapter for OpenTelemetry {
    fn name(&self) -> &'static str {
        "opentelemetry"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::TraceSpan]
    }

    fn build(&self, json: &Json) -> Result<Arc<dyn Handler>, ParamsError> {
        let p: Params = params(json)?;
        let endpoint = Endpoint::from_shared(p.endpoint.clone())
            .map_err(|e| ParamsError::new("endpoint", format!("{:?}: {e}", p.endpoint)))?;
        if !p.endpoint.starts_with("http://") && !p.endpoint.starts_with("https://") {
            return Err(ParamsError::new(
                "endpoint",
                format!("{:?}: expected http://host:port", p.endpoint),
            ));
        }
        let limits = outbox::limits(p.batch_size, p.buffer_size, &p.flush_interval)?;
        // Connects when first used, and again after a failure.
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .timeout(p.timeout.as_duration())
            .connect_lazy();
        let outbox = Arc::new(Outbox::new(limits, &self.metrics, &p.endpoint));
        let stop = self.stop.child_token();
        let sink = Collector(TraceServiceClient::new(channel));
        self.tasks.spawn(outbox::run(
            outbox.clone(),
            sink,
            self.metrics.clone(),
            stop.clone(),
        ));
        Ok(Arc::new(OtelHandler {
            outbox,
            _stop: stop.drop_guard(),
        }))
    }
}

/// A span and the service it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub service: String,
    pub span: Span,
}

struct OtelHandler {
    outbox: Arc<Outbox<Exported>>,
    _stop: DropGuard,
}

#[async_trait]
impl Handler for OtelHandler {
    async fn report(&self, instances: &[Instance]) -> Result<(), String> {
        let mut refused = 0;
        let mut first = None;
        let spans: Vec<Exported> = instances
            .iter()
            .filter_map(|i| match span_of(i) {
                Ok(s) => Some(s),
                Err(e) => {
                    refused += 1;
                    first.get_or_insert_with(|| format!("{}: {e}", i.name));
                    None
                }
            })
            .collect();
        self.outbox.push(spans.into_iter())?;
        match first {
            None => Ok(()),
            Some(e) => Err(format!("{refused} spans not exported; first: {e}")),
        }
    }
}

/// Hex ids as OTLP's bytes: a 64-bit (Zipkin) trace id is widened to 128.
fn id(hex: &str, bytes: usize, what: &str) -> Result<Vec<u8>, String> {
    let hex = hex.trim();
    let valid = hex.len().is_multiple_of(2)
        && hex.len() <= bytes * 2
        && hex.chars().all(|c| c.is_ascii_hexdigit());
    if !valid || hex.is_empty() {
        return Err(format!("{what} {hex:?} is not {bytes} bytes of hex"));
    }
    let mut out = vec![0u8; bytes - hex.len() / 2];
    for pair in hex.as_bytes().chunks(2) {
        let s = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
        out.push(u8::from_str_radix(s, 16).map_err(|e| e.to_string())?);
    }
    if out.iter().all(|b| *b == 0) {
        return Err(format!("{what} is all zeros"));
    }
    Ok(out)
}

fn nanos(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Timestamp(t)) => t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        _ => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

fn any(v: &Value) -> AnyValue {
    let value = match v {
        Value::Int64(i) => any_value::Value::IntValue(*i),
        Value::Double(d) => any_value::Value::DoubleValue(*d),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Duration(d) => any_value::Value::DoubleValue(d.as_secs_f64()),
        other => any_value::Value::StringValue(other.to_string()),
    };
    AnyValue { value: Some(value) }
}

fn kv(key: &str, v: &Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(any(v)),
    }
}

/// The fields that become span attributes, by OTLP name.
const ATTRIBUTES: &[(&str, &str)] = &[
    ("httpStatusCode", "http.status_code"),
    ("sourceName", "source.name"),
    ("sourceIp", "source.ip"),
    ("destinationName", "destination.name"),
    ("destinationIp", "destination.ip"),
    ("requestSize", "request.size"),
    ("requestTotalSize", "request.total_size"),
    ("responseSize", "response.size"),
    ("responseTotalSize", "response.total_size"),
    ("apiProtocol", "protocol"),
];

pub fn span_of(i: &Instance) -> Result<Exported, String> {
    let text = |f| i.value(f).and_then(Value::as_str).unwrap_or_default();
    let client = matches!(i.value("clientSpan"), Some(Value::Bool(true)));
    let mut attributes: Vec<KeyValue> = i
        .map("spanTags")
        .into_iter()
        .flatten()
        .map(|(k, v)| kv(k, v))
        .collect();
    for (field, key) in ATTRIBUTES {
        if let Some(v) = i.value(field) {
            attributes.push(kv(key, v));
        }
    }
    let code = match i.value("httpStatusCode") {
        Some(Value::Int64(c)) => *c,
        _ => 0,
    };
    let parent = text("parentSpanId");
    let service = if client {
        text("sourceName")
    } else {
        text("destinationName")
    };
    let span = Span {
        trace_id: id(text("traceId"), 16, "traceId")?,
        span_id: id(text("spanId"), 8, "spanId")?,
        parent_span_id: if parent.is_empty() {
            Vec::new()
        } else {
            id(parent, 8, "parentSpanId")?
        },
        name: match text("spanName") {
            "" => "unknown".into(),
            n => n.to_string(),
        },
        kind: if client {
            span::SpanKind::Client
        } else {
            span::SpanKind::Server
        } as i32,
        start_time_unix_nano: nanos(i.value("startTime")),
        end_time_unix_nano: nanos(i.value("endTime")),
        attributes,
        status: Some(Status {
            message: String::new(),
            code: if code >= 500 {
                status::StatusCode::Error
            } else {
                status::StatusCode::Unset
            } as i32,
        }),
        ..Default::default()
    };
    Ok(Exported {
        service: if service.is_empty() {
            "unknown"
        } else {
            service
        }
        .to_string(),
        span,
    })
}

/// `spans` as one export request, a resource per service.
pub fn request(spans: &[Exported]) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for e in spans {
        by_service
            .entry(&e.service)
            .or_default()
            .push(e.span.clone());
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", &Value::string(service))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "trireme-mixer-telemetry".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

struct Collector(TraceServiceClient<Channel>);

#[async_trait]
impl Sink<Exported> for Collector {
    async fn send(&mut self, spans: &[Exported]) -> Result<(), String> {
        self.0
            .export(request(spans))
            .await
            .map(|_| ())
            .map_err(|s| format!("{}: {}", s.code(), s.message()))
    }
}

#[cfg(test)]
mod tests {
    use mixer::template::FieldValue;

    use super::*;

    fn instance(fields: Vec<(&'static str, Value)>) -> Instance {
        let tags = [("http.method".to_string(), Value::string("GET"))].into();
        let mut all: Vec<(&'static str, FieldValue)> = fields
            .into_iter()
            .map(|(k, v)| (k, FieldValue::Value(v)))
            .collect();
        all.push(("spanTags", FieldValue::Map(tags)));
        Instance {
            name: "default.tracespan.istio-system".into(),
            template: Template::TraceSpan,
            fields: all,
        }
    }

    #[test]
    fn a_tracespan_is_an_otlp_span_of_its_service() {
        let start = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        let e = span_of(&instance(vec![
            ("traceId", Value::string("463ac35c9f6413ad")),
            ("spanId", Value::string("a2fb4a1d1a96d312")),
            ("parentSpanId", Value::string("0020000000000001")),
            (
                "spanName",
                Value::string("reviews.default.svc.cluster.local:9080/reviews/1"),
            ),
            ("startTime", Value::Timestamp(start)),
            (
                "endTime",
                Value::Timestamp(start + Duration::from_millis(3)),
            ),
            ("httpStatusCode", Value::Int64(503)),
            ("clientSpan", Value::Bool(false)),
            ("sourceName", Value::string("productpage-v1")),
            ("destinationName", Value::string("reviews-v1")),
        ]))
        .unwrap();
        assert_eq!(e.service, "reviews-v1");
        let s = &e.span;
        assert_eq!(
            s.trace_id,
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0x46, 0x3a, 0xc3, 0x5c, 0x9f, 0x64, 0x13, 0xad
            ]
        );
        assert_eq!(s.span_id.len(), 8);
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 3_000_000);
        assert_eq!(
            s.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        let keys: Vec<&str> = s.attributes.iter().map(|a| a.key.as_str()).collect();
        assert!(
            keys.contains(&"http.method") && keys.contains(&"http.status_code"),
            "{keys:?}"
        );

        let request = request(&[
            e.clone(),
            Exported {
                service: "productpage-v1".into(),
                ..e
            },
        ]);
        assert_eq!(request.resource_spans.len(), 2);
    }

    #[test]
    fn bad_ids_are_refused_naming_the_field() {
        let err = span_of(&instance(vec![
            ("traceId", Value::string("xyz")),
            ("spanId", Value::string("01")),
        ]))
        .unwrap_err();
        assert_eq!(err, "traceId \"xyz\" is not 16 bytes of hex");
        let err = span_of(&instance(vec![
            ("traceId", Value::string("01")),
            ("spanId", Value::string("0000")),
        ]))
        .unwrap_err();
        assert_eq!(err, "spanId is all zeros");
    }

    #[test]
    fn bad_params_name_the_field() {
        let a = OpenTelemetry {
            metrics: OutboxMetrics::new(&METRICS, &mesh::metrics::Metrics::default()),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let err = |j: Json| a.build(&j).err().unwrap().to_string();
        assert!(err(serde_json::json!({})).contains("endpoint"));
        assert!(err(serde_json::json!({"endpoint": "collector:4317"})).starts_with("endpoint:"));
        assert!(
            err(serde_json::json!({"endpoint": "http://c:4317", "batchSize": 0}))
                .contains("positive")
        );
    }
}
