//! Between the APIs and the adapters: accepted reports wait in bounded
//! queues and are dispatched by workers, so a slow adapter never slows the
//! proxies that report. A full queue drops the batch and counts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mixer::attribute::Bag;
use mixer::dispatch::Dispatcher;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::{ApiLabel, HandlerLabel, TelemetryMetrics};

pub struct Batch {
    pub api: &'static str,
    pub bags: Vec<Bag>,
}

/// The sending side; cloned into every API.
#[derive(Clone)]
pub struct Ingest {
    queues: Arc<Vec<mpsc::Sender<Batch>>>,
    next: Arc<AtomicUsize>,
    metrics: TelemetryMetrics,
}

impl Ingest {
    /// `workers` dispatch tasks, each with a queue of `depth` batches. The
    /// tasks end once every [`Ingest`] is dropped and their queues drained.
    pub fn start(
        dispatcher: Arc<Dispatcher>,
        metrics: TelemetryMetrics,
        workers: usize,
        depth: usize,
    ) -> (Ingest, Vec<JoinHandle<()>>) {
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..workers.max(1) {
            let (tx, rx) = mpsc::channel(depth.max(1));
            queues.push(tx);
            tasks.push(tokio::spawn(work(rx, dispatcher.clone(), metrics.clone())));
        }
        let ingest = Ingest {
            queues: Arc::new(queues),
            next: Arc::default(),
            metrics,
        };
        (ingest, tasks)
    }

    /// Queues `batch`, or drops and counts it when every queue is full.
    pub fn submit(&self, batch: Batch) {
        let label = ApiLabel { api: batch.api };
        let n = batch.bags.len() as u64;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut batch = batch;
        for i in 0..self.queues.len() {
            match self.queues[(start + i) % self.queues.len()].try_send(batch) {
                Ok(()) => {
                    self.metrics.queued_batches.inc();
                    self.metrics.bags.get_or_create(&label).inc_by(n);
                    return;
                }
                Err(mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b)) => {
                    batch = b;
                }
            }
        }
        self.metrics.dropped_bags.get_or_create(&label).inc_by(n);
    }
}

async fn work(
    mut rx: mpsc::Receiver<Batch>,
    dispatcher: Arc<Dispatcher>,
    metrics: TelemetryMetrics,
) {
    while let Some(mut batch) = rx.recv().await {
        metrics.queued_batches.dec();
        let snapshot = dispatcher.snapshot();
        for bag in &mut batch.bags {
            dispatcher.generate(&snapshot, bag);
        }
        let outcome = dispatcher.report(&snapshot, &batch.bags).await;
        metrics.dispatched_bags.inc_by(batch.bags.len() as u64);
        metrics.instances.inc_by(outcome.instances as u64);
        if outcome.build_errors > 0 {
            metrics.instance_errors.inc_by(outcome.build_errors as u64);
            tracing::debug!(
                count = outcome.build_errors,
                "instances not built: {}",
                outcome.first_build_error.unwrap_or_default()
            );
        }
        for (handler, error) in outcome.handler_errors {
            tracing::debug!(%handler, "report failed: {error}");
            metrics
                .handler_errors
                .get_or_create(&HandlerLabel { handler })
                .inc();
        }
    }
}
