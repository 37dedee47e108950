//! Mixer telemetry (Istio's istio-telemetry): reports from Istio's Mixer API
//! and from Envoy's access log service, dispatched to adapters (prometheus,
//! stdio, kubernetesenv) through the shared Mixer runtime.

pub mod access_log;
pub mod adapter;
pub mod ingest;
pub mod metrics;
pub mod serve;
pub mod server;
