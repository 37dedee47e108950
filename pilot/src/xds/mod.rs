//! Envoy xDS v3 over ADS: the push context, the generators (one module per
//! resource type), the per-stream state machine and the gRPC server.

pub mod cache;
pub mod cluster;
pub mod connection;
pub mod endpoint;
pub mod fixtures;
pub mod generator;
pub mod grpc;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod push;
pub mod resource;
pub mod route;
pub mod server;
