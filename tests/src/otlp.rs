//! An OpenTelemetry collector's trace endpoint (OTLP over gRPC) that keeps
//! what it is sent: a real tonic server with recorded answers, as the tests
//! of an exporter need one and no collector is packaged here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<ResourceSpans>>>);

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = request.into_inner().resource_spans;
        self.0.lock().expect("recorder").extend(spans);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Stops serving when dropped.
pub struct Collector {
    pub addr: SocketAddr,
    received: Recorder,
    _stop: oneshot::Sender<()>,
}

impl Collector {
    pub async fn start(ip: &str) -> Collector {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let received = Recorder::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(received.clone());
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Collector {
            addr,
            received,
            _stop: stop,
        }
    }

    /// What has been exported so far.
    pub fn received(&self) -> Vec<ResourceSpans> {
        self.received.0.lock().expect("recorder").clone()
    }
}
