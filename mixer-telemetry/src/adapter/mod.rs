//! The in-process adapters mixer-telemetry offers.

pub mod prometheus;
pub mod sql;
pub mod stdio;

use std::sync::Arc;

use mixer::adapter::Registry;
use mixer::adapter::kubernetesenv::KubernetesEnv;

use prometheus::{MeshMetrics, Prometheus};

/// Every adapter a handler may name with `compiledAdapter` (or as a legacy
/// kind). The prometheus handlers record into `mesh`.
pub fn registry(kubernetesenv: KubernetesEnv, mesh: MeshMetrics, sql: sql::Sql) -> Registry {
    Registry::new(vec![
        Arc::new(kubernetesenv),
        Arc::new(Prometheus::new(mesh)),
        Arc::new(stdio::Stdio),
        Arc::new(sql),
    ])
}
