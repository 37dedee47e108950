//! Between a handler and the task that sends its items away (rows to a
//! database, spans to a collector): a bounded queue whose items leave only
//! once sent. While the far side is away they wait; once the queue is full,
//! new items are dropped and counted. The sending task ([`run`]) flushes
//! every interval, sooner when a batch is full, and drains on stop.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

type Labels = Vec<(String, String)>;

/// One adapter's outbox metrics, by one label (`table`, `endpoint`).
#[derive(Clone)]
pub struct OutboxMetrics {
    label: &'static str,
    sent: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    buffered: Family<Labels, Gauge>,
}

/// How an adapter names its outbox metrics.
pub struct Names {
    pub label: &'static str,
    /// `mixer_sql_rows_written`
    pub sent: &'static str,
    pub dropped: &'static str,
    pub errors: &'static str,
    pub buffered: &'static str,
    /// `rows`, `spans`
    pub items: &'static str,
}

impl OutboxMetrics {
    pub fn new(names: &Names, r: &mesh::metrics::Metrics) -> OutboxMetrics {
        let m = OutboxMetrics {
            label: names.label,
            sent: Family::default(),
            dropped: Family::default(),
            errors: Family::default(),
            buffered: Family::default(),
        };
        let (items, by) = (names.items, names.label);
        r.register(
            names.sent,
            &format!("{items} sent, by {by}"),
            m.sent.clone(),
        );
        r.register(
            names.dropped,
            &format!("{items} dropped because the buffer was full (the far side away), by {by}"),
            m.dropped.clone(),
        );
        r.register(
            names.errors,
            &format!("Failed attempts to send {items}, by {by}"),
            m.errors.clone(),
        );
        r.register(
            names.buffered,
            &format!("{items} waiting to be sent, by {by}"),
            m.buffered.clone(),
        );
        m
    }

    fn labels(&self, value: &str) -> Labels {
        vec![(self.label.to_string(), value.to_string())]
    }

    #[cfg(test)]
    pub fn get(&self, value: &str) -> (u64, u64, u64, i64) {
        let l = self.labels(value);
        (
            self.sent.get_or_create(&l).get(),
            self.dropped.get_or_create(&l).get(),
            self.errors.get_or_create(&l).get(),
            self.buffered.get_or_create(&l).get(),
        )
    }
}

/// `batchSize`, `flushInterval` and `bufferSize` of adapters' params, when
/// not given: batches of 500 at least every second, 10,000 held.
pub fn default_batch() -> usize {
    500
}

pub fn default_flush() -> api::duration::IstioDuration {
    api::duration::IstioDuration(Duration::from_secs(1))
}

pub fn default_buffer() -> usize {
    10_000
}

/// `batchSize`, `bufferSize` and `flushInterval`, checked.
pub fn limits(
    batch: usize,
    capacity: usize,
    flush: &api::duration::IstioDuration,
) -> Result<Limits, mixer::adapter::ParamsError> {
    let flush = flush.as_duration();
    if batch == 0 || capacity == 0 || flush.is_zero() {
        return Err(mixer::adapter::ParamsError::new(
            "",
            "batchSize, bufferSize and flushInterval must be positive",
        ));
    }
    Ok(Limits {
        batch,
        capacity,
        flush,
    })
}

/// Sizes and pace of one outbox.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub batch: usize,
    pub capacity: usize,
    pub flush: Duration,
}

pub struct Outbox<T> {
    items: Mutex<VecDeque<T>>,
    wake: Notify,
    limits: Limits,
    buffered: Gauge,
    dropped: Counter,
    /// For the metrics' label and the logs: the table, the endpoint.
    pub name: String,
}

impl<T: Clone + Send + 'static> Outbox<T> {
    pub fn new(limits: Limits, metrics: &OutboxMetrics, name: &str) -> Outbox<T> {
        let l = metrics.labels(name);
        Outbox {
            items: Mutex::default(),
            wake: Notify::new(),
            limits,
            buffered: metrics.buffered.get_or_create(&l).clone(),
            dropped: metrics.dropped.get_or_create(&l).clone(),
            name: name.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues what fits; says how many did not.
    pub fn push(&self, items: impl ExactSizeIterator<Item = T>) -> Result<(), String> {
        let offered = items.len();
        let cap = self.limits.capacity;
        // The gauge is set under the lock: set after it, two pushes at once
        // could leave the smaller, older length showing.
        let (dropped, len) = {
            let mut q = self.lock();
            let room = cap.saturating_sub(q.len());
            q.extend(items.take(room));
            self.buffered.set(q.len() as i64);
            (offered.saturating_sub(room), q.len())
        };
        if len >= self.limits.batch {
            self.wake.notify_one();
        }
        if dropped > 0 {
            self.dropped.inc_by(dropped as u64);
            return Err(format!(
                "{dropped} dropped: the buffer of {cap} is full (is {} away?)",
                self.name
            ));
        }
        Ok(())
    }
}

/// What sends a batch away; it keeps its own connection and drops it on a
/// failure, so the next call starts afresh.
#[async_trait]
pub trait Sink<T>: Send {
    async fn send(&mut self, batch: &[T]) -> Result<(), String>;
}

/// Sends `outbox`'s items in batches until `stop`, then drains what it can.
pub async fn run<T: Clone + Send + 'static>(
    outbox: Arc<Outbox<T>>,
    mut sink: impl Sink<T>,
    metrics: OutboxMetrics,
    stop: CancellationToken,
) {
    let l = metrics.labels(&outbox.name);
    let (sent, errors) = (
        metrics.sent.get_or_create(&l).clone(),
        metrics.errors.get_or_create(&l).clone(),
    );
    let limits = outbox.limits;
    let mut last_complaint: Option<Instant> = None;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = outbox.wake.notified() => false,
            _ = tokio::time::sleep(limits.flush) => false,
        };
        loop {
            let batch: Vec<T> = outbox.lock().iter().take(limits.batch).cloned().collect();
            if batch.is_empty() {
                break;
            }
            match sink.send(&batch).await {
                Ok(()) => {
                    {
                        let mut q = outbox.lock();
                        q.drain(..batch.len());
                        outbox.buffered.set(q.len() as i64);
                    }
                    sent.inc_by(batch.len() as u64);
                }
                Err(e) => {
                    errors.inc();
                    // Said once a minute, not once a flush.
                    if last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        last_complaint = Some(Instant::now());
                        tracing::warn!(to = %outbox.name, "cannot send; kept in the buffer: {e}");
                    }
                    break;
                }
            }
        }
        if stopping {
            return;
        }
    }
}
