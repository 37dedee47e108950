//! Envoy's access log service (`envoy.service.accesslog.v3`), so an
//! unmodified Envoy reports: each stream's entries become attribute bags
//! for the same adapters as Mixer's Report. Entries arrive as bytes and are
//! read in place ([`crate::access_log::entry`]). Each message's entries are
//! queued together; a message Envoy sends with no identifier before it, or
//! with an entry that cannot be read, is refused with the stream, and what
//! the stream carried before it stays accepted.

use api::als_wire::access_log_service_server::AccessLogService;
use api::als_wire::{StreamAccessLogsMessage, StreamAccessLogsResponse};
use mixer::attribute::Bag;
use tonic::{Request, Response, Status, Streaming};

use super::Telemetry;
use crate::access_log::entry::{HttpEntry, Malformed, TcpEntry};
use crate::access_log::{Mapper, Reporter};
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
            let bags = match &reporter {
                Some(reporter) => self.bags(&message, reporter),
                None => Err(Status::invalid_argument(
                    "the stream's first message must carry an identifier (node and log name)",
                )),
            };
            match bags {
                Ok(bags) if bags.is_empty() => {}
                Ok(bags) => self.ingest.submit(Batch { api: "als", bags }),
                Err(status) => {
                    self.metrics
                        .bad_requests
                        .get_or_create(&ApiLabel { api: "als" })
                        .inc();
                    return Err(status);
                }
            }
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}

impl Telemetry {
    /// A message's entries as bags, or INVALID_ARGUMENT naming the first
    /// entry that cannot be read and its field.
    fn bags(
        &self,
        message: &StreamAccessLogsMessage,
        reporter: &Reporter,
    ) -> Result<Vec<Bag>, Status> {
        let snapshot = self.dispatcher.snapshot();
        let mapper = Mapper::new(&snapshot.vocabulary);
        let refuse = |kind: &str, i: usize, e: Malformed| {
            Status::invalid_argument(format!("{kind}.log_entry[{i}]: {e}"))
        };
        let mut bags = Vec::new();
        if let Some(http) = &message.http_logs {
            bags.reserve(http.log_entry.len());
            for (i, bytes) in http.log_entry.iter().enumerate() {
                let entry = HttpEntry::decode(bytes).map_err(|e| refuse("http_logs", i, e))?;
                bags.push(mapper.http(&entry, reporter));
            }
        }
        if let Some(tcp) = &message.tcp_logs {
            bags.reserve(tcp.log_entry.len());
            for (i, bytes) in tcp.log_entry.iter().enumerate() {
                let entry = TcpEntry::decode(bytes).map_err(|e| refuse("tcp_logs", i, e))?;
                bags.push(mapper.tcp(&entry, reporter));
            }
        }
        Ok(bags)
    }
}
