//! Templates: the shapes of the instances Mixer builds from attributes and
//! hands to adapters. Each template declares its fields; an instance's
//! `params` give each field an expression, checked when config loads.

mod instance;
mod remembered;

pub use instance::{
    Evaluated, FieldValue, Instance, InstanceBuilder, SharedMaps, ValueMap, short_name,
};
pub use remembered::Bound;

use crate::attribute::ValueType;

/// When a template's instances are dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variety {
    Check,
    Quota,
    Report,
    /// Run before the others: adds attributes (Istio's kubernetesenv).
    AttributeGeneration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Template {
    CheckNothing,
    ListEntry,
    Quota,
    Authorization,
    ReportNothing,
    Metric,
    LogEntry,
    TraceSpan,
    /// Istio's `kubernetes` attribute-generation template.
    Kubernetes,
}

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// One value of any type (`istio.policy.v1beta1.Value`).
    Any,
    /// One value of this type (textual types accept one another).
    Typed(ValueType),
    /// Names to values of any type (dimensions, variables, properties).
    Map,
}

pub struct Field {
    /// The field's path in `params`, dotted for nested messages
    /// (`subject.user`), in the camelCase operators write.
    pub path: &'static str,
    pub kind: FieldKind,
}

const fn f(path: &'static str, kind: FieldKind) -> Field {
    Field { path, kind }
}

use FieldKind::{Any, Map, Typed};
use ValueType::{Bool, Duration, Int64, IpAddress, String as Str, StringMap, Timestamp};

const LIST_ENTRY: &[Field] = &[f("value", Any)];
const QUOTA: &[Field] = &[f("dimensions", Map)];
const AUTHORIZATION: &[Field] = &[
    f("subject.user", Typed(Str)),
    f("subject.groups", Typed(Str)),
    f("subject.properties", Map),
    f("action.namespace", Typed(Str)),
    f("action.service", Typed(Str)),
    f("action.method", Typed(Str)),
    f("action.path", Typed(Str)),
    f("action.properties", Map),
];
const METRIC: &[Field] = &[
    f("value", Any),
    f("dimensions", Map),
    f("monitoredResourceType", Typed(Str)),
    f("monitoredResourceDimensions", Map),
];
const LOG_ENTRY: &[Field] = &[
    f("variables", Map),
    f("timestamp", Typed(Timestamp)),
    f("severity", Typed(Str)),
    f("monitoredResourceType", Typed(Str)),
    f("monitoredResourceDimensions", Map),
];
const TRACE_SPAN: &[Field] = &[
    f("traceId", Typed(Str)),
    f("spanId", Typed(Str)),
    f("parentSpanId", Typed(Str)),
    f("spanName", Typed(Str)),
    f("startTime", Typed(Timestamp)),
    f("endTime", Typed(Timestamp)),
    f("spanTags", Map),
    f("httpStatusCode", Typed(Int64)),
    f("clientSpan", Typed(Bool)),
    f("rewriteClientSpanId", Typed(Bool)),
    f("sourceName", Typed(Str)),
    f("sourceIp", Typed(IpAddress)),
    f("destinationName", Typed(Str)),
    f("destinationIp", Typed(IpAddress)),
    f("requestSize", Typed(Int64)),
    f("requestTotalSize", Typed(Int64)),
    f("responseSize", Typed(Int64)),
    f("responseTotalSize", Typed(Int64)),
    f("apiProtocol", Typed(Str)),
    f("duration", Typed(Duration)),
];
const KUBERNETES: &[Field] = &[
    f("sourceUid", Typed(Str)),
    f("sourceIp", Typed(IpAddress)),
    f("destinationUid", Typed(Str)),
    f("destinationIp", Typed(IpAddress)),
    f("destinationPort", Typed(Int64)),
];

/// What the `kubernetes` template's adapter produces, as `$out.<name>` in
/// an instance's `attributeBindings`.
const KUBERNETES_OUT: &[(&str, ValueType)] = &[
    ("source_pod_uid", Str),
    ("source_pod_ip", IpAddress),
    ("source_pod_name", Str),
    ("source_labels", StringMap),
    ("source_namespace", Str),
    ("source_service_account_name", Str),
    ("source_host_ip", IpAddress),
    ("source_workload_uid", Str),
    ("source_workload_name", Str),
    ("source_workload_namespace", Str),
    ("source_owner", Str),
    ("destination_pod_uid", Str),
    ("destination_pod_ip", IpAddress),
    ("destination_pod_name", Str),
    ("destination_container_name", Str),
    ("destination_labels", StringMap),
    ("destination_namespace", Str),
    ("destination_service_account_name", Str),
    ("destination_host_ip", IpAddress),
    ("destination_workload_uid", Str),
    ("destination_workload_name", Str),
    ("destination_workload_namespace", Str),
    ("destination_owner", Str),
];

impl Template {
    pub const ALL: [Template; 9] = [
        Template::CheckNothing,
        Template::ListEntry,
        Template::Quota,
        Template::Authorization,
        Template::ReportNothing,
        Template::Metric,
        Template::LogEntry,
        Template::TraceSpan,
        Template::Kubernetes,
    ];

    /// The name config uses (`compiledTemplate`, or the legacy kind).
    pub fn name(self) -> &'static str {
        match self {
            Template::CheckNothing => "checknothing",
            Template::ListEntry => "listentry",
            Template::Quota => "quota",
            Template::Authorization => "authorization",
            Template::ReportNothing => "reportnothing",
            Template::Metric => "metric",
            Template::LogEntry => "logentry",
            Template::TraceSpan => "tracespan",
            Template::Kubernetes => "kubernetes",
        }
    }

    pub fn parse(name: &str) -> Option<Template> {
        Template::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn variety(self) -> Variety {
        match self {
            Template::CheckNothing | Template::ListEntry | Template::Authorization => {
                Variety::Check
            }
            Template::Quota => Variety::Quota,
            Template::ReportNothing
            | Template::Metric
            | Template::LogEntry
            | Template::TraceSpan => Variety::Report,
            Template::Kubernetes => Variety::AttributeGeneration,
        }
    }

    pub fn fields(self) -> &'static [Field] {
        match self {
            Template::CheckNothing | Template::ReportNothing => &[],
            Template::ListEntry => LIST_ENTRY,
            Template::Quota => QUOTA,
            Template::Authorization => AUTHORIZATION,
            Template::Metric => METRIC,
            Template::LogEntry => LOG_ENTRY,
            Template::TraceSpan => TRACE_SPAN,
            Template::Kubernetes => KUBERNETES,
        }
    }

    /// The `$out` fields an attribute-generating template's adapter fills.
    pub fn outputs(self) -> &'static [(&'static str, ValueType)] {
        match self {
            Template::Kubernetes => KUBERNETES_OUT,
            _ => &[],
        }
    }
}
