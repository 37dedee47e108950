//! Istio's Galley: the one component that ingests and validates config and
//! distributes it. Objects come from a directory or Kubernetes ([`source`]),
//! are checked ([`validate`], shared with the webhook ([`webhook`]) and the
//! `validate` commands), gathered into a [`snapshot`], and served to Pilot and
//! Mixer over MCP ([`mcp`]).

pub mod crds;
pub mod mcp;
pub mod metrics;
pub mod registration;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod validate;
pub mod webhook;

pub const INFO: mesh::version::Info = mesh::version::Info::new("galley", env!("CARGO_PKG_VERSION"));
