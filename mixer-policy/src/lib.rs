//! mixer-policy (Istio's istio-policy): Mixer's Check and quota through the
//! policy adapters, answered on one gRPC port for Istio's Mixer API and for
//! Envoy's ext_authz.

pub mod adapter;
pub mod metrics;
pub mod serve;
pub mod server;
