//! The in-process adapters mixer-telemetry offers.

pub mod opentelemetry;
pub mod outbox;
pub mod prometheus;
pub mod sql;
pub mod stdio;

use std::sync::Arc;

use mixer::adapter::Registry;
use mixer::adapter::kubernetesenv::KubernetesEnv;

use outbox::OutboxMetrics;
use prometheus::{MeshMetrics, Prometheus};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Every adapter a handler may name with `compiledAdapter` (or as a legacy
/// kind). The prometheus handlers record into `mesh`.
pub fn registry(
    kubernetesenv: KubernetesEnv,
    mesh: MeshMetrics,
    background: &Background,
) -> Registry {
    Registry::new(vec![
        Arc::new(kubernetesenv),
        Arc::new(Prometheus::new(mesh)),
        Arc::new(stdio::Stdio),
        Arc::new(sql::Sql {
            metrics: background.sql.clone(),
            stop: background.stop.clone(),
            tasks: background.tasks.clone(),
        }),
        Arc::new(opentelemetry::OpenTelemetry {
            metrics: background.opentelemetry.clone(),
            stop: background.stop.clone(),
            tasks: background.tasks.clone(),
        }),
    ])
}

/// The adapters that send what they are handed away in the background (to a
/// database, a collector): their metrics, and the tasks doing it, which end,
/// flushing what they hold, once `stop` is cancelled after the last report.
pub struct Background {
    pub sql: OutboxMetrics,
    pub opentelemetry: OutboxMetrics,
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

impl Background {
    pub fn new(registry: &mesh::metrics::Metrics) -> Background {
        Background {
            sql: OutboxMetrics::new(&sql::METRICS, registry),
            opentelemetry: OutboxMetrics::new(&opentelemetry::METRICS, registry),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Lets the tasks send what they hold, for at most `grace`.
    pub async fn finish(&self, grace: std::time::Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "adapters did not finish sending within {grace:?}; what they held is lost"
            );
        }
    }
}
