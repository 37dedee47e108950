//! The gRPC APIs mixer-telemetry answers on its one port: Istio's Mixer
//! `Report` ([`mixer`]) and Envoy's access log service ([`als`]). Both turn
//! what they receive into attribute bags for the same queue.

pub mod als;
pub mod mixer;

use std::sync::Arc;

use ::mixer::dispatch::Dispatcher;

use tokio_util::sync::CancellationToken;

use crate::ingest::Ingest;
use crate::metrics::TelemetryMetrics;

#[derive(Clone)]
pub struct Telemetry {
    pub dispatcher: Arc<Dispatcher>,
    pub ingest: Ingest,
    pub metrics: TelemetryMetrics,
    /// Ends open access-log streams, which Envoy never closes itself.
    pub shutdown: CancellationToken,
}
