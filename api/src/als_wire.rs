//! Envoy's access log service as mixer-telemetry reads it: a stream's
//! identifier decoded, its entries left as the bytes they arrived in, for
//! the server's in-place reader. On the wire these are exactly Envoy's
//! `envoy.service.accesslog.v3` messages (an embedded message and a `bytes`
//! field are framed alike, and the fields not declared here are skipped);
//! clients build `envoy-types`' generated types.

use bytes::Bytes;

/// `StreamAccessLogsMessage`. Its `log_entries` oneof is two fields on the
/// wire, read here as two optional messages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAccessLogsMessage {
    #[prost(message, optional, tag = "1")]
    pub identifier: Option<Identifier>,
    #[prost(message, optional, tag = "2")]
    pub http_logs: Option<LogEntries>,
    #[prost(message, optional, tag = "3")]
    pub tcp_logs: Option<LogEntries>,
}

/// `StreamAccessLogsMessage.Identifier`: only what names the reporter.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Identifier {
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    #[prost(string, tag = "2")]
    pub log_name: String,
}

/// `envoy.config.core.v3.Node`: its id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Node {
    #[prost(string, tag = "1")]
    pub id: String,
}

/// `HTTPAccessLogEntries` or `TCPAccessLogEntries`: each entry an
/// `HTTPAccessLogEntry` or `TCPAccessLogEntry` message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogEntries {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub log_entry: Vec<Bytes>,
}

/// `StreamAccessLogsResponse`, which has no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAccessLogsResponse {}

include!(concat!(
    env!("OUT_DIR"),
    "/envoy.service.accesslog.v3.AccessLogService.rs"
));
