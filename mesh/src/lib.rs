//! What every Trireme service shares: logging setup, the monitoring endpoint
//! (`/metrics`, `/version`), HTTP serving with graceful shutdown, gRPC served
//! from a runtime per thread, the shutdown signal itself, local mode's
//! directories of YAML, the MCP sink Pilot and Mixer read Galley with, and
//! what admission webhooks share.

pub mod dir;
pub mod grpc;
pub mod mcp;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod unary;
pub mod version;
pub mod webhook;
