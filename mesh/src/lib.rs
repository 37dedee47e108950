//! What every Trireme service shares: logging setup, the monitoring endpoint
//! (`/metrics`, `/version`), HTTP serving with graceful shutdown, and the
//! shutdown signal itself.

pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod version;
