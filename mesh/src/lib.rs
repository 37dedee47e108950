//! What every Trireme service shares: logging setup, the monitoring endpoint
//! (`/metrics`, `/version`), HTTP serving with graceful shutdown, the
//! shutdown signal itself, and local mode's directories of YAML.

pub mod dir;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod version;
