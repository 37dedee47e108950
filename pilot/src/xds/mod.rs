//! Envoy xDS v3 over ADS. Data flows one way: the push context ([`push`]) →
//! the generators ([`generate`], one module per type, calling the
//! [`plugin`]s) → the per-proxy resource cache ([`cache`]) → the ADS
//! protocol state machine and its gRPC transport ([`server`]).

pub mod cache;
pub mod fixtures;
pub mod generate;
pub mod metrics;
pub mod names;
pub mod plugin;
pub mod proxy;
pub mod push;
pub mod resource;
pub mod server;
pub mod tls;
