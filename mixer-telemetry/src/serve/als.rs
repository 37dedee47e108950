//! Envoy's access log service (`envoy.service.accesslog.v3`), so an
//! unmodified Envoy reports: each stream's entries become attribute bags
//! for the same adapters as Mixer's Report. Entries are queued per message;
//! a message Envoy sends with no identifier before it is refused, as the
//! reporter would be unknown.

use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::AccessLogService;
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::LogEntries;
use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse,
};
use tonic::{Request, Response, Status, Streaming};

use super::Telemetry;
use crate::access_log::{self, Reporter};
use crate::ingest::Batch;
use crate::metrics::ApiLabel;

#[tonic::async_trait]
impl AccessLogService for Telemetry {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut reporter: Option<Reporter> = None;
        loop {
            let message = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                m = stream.message() => match m? {
                    Some(m) => m,
                    None => break,
                },
            };
            // Envoy sends the identifier in a stream's first message only.
            if let Some(id) = &message.identifier {
                let node = id.node.as_ref().map(|n| n.id.as_str()).unwrap_or_default();
                reporter = Some(Reporter::new(node, &id.log_name));
            }
            let Some(reporter) = &reporter else {
                self.metrics
                    .bad_requests
                    .get_or_create(&ApiLabel { api: "als" })
                    .inc();
                return Err(Status::invalid_argument(
                    "the stream's first message must carry an identifier (node and log name)",
                ));
            };
            let snapshot = self.dispatcher.snapshot();
            let vocab = &snapshot.vocabulary;
            let bags: Vec<_> = match &message.log_entries {
                Some(LogEntries::HttpLogs(h)) => h
                    .log_entry
                    .iter()
                    .map(|e| access_log::http(e, reporter, vocab))
                    .collect(),
                Some(LogEntries::TcpLogs(t)) => t
                    .log_entry
                    .iter()
                    .map(|e| access_log::tcp(e, reporter, vocab))
                    .collect(),
                None => Vec::new(),
            };
            if !bags.is_empty() {
                self.ingest.submit(Batch { api: "als", bags });
            }
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}
