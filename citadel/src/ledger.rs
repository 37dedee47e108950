//! The ledger: every certificate Citadel issues (serial, identity,
//! validity, who asked), in SQLite by default or PostgreSQL. Signing never
//! waits on it: entries go through a bounded queue to one writer that
//! inserts in batches and holds a batch while the database is away.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, QueryBuilder, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// One issued certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub serial: String,
    /// The SPIFFE ID.
    pub identity: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// `csr <peer address> (<how authenticated>)` or `secret-controller`.
    pub requester: String,
}

enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS citadel_issued_certificates (
    serial TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    requester TEXT NOT NULL,
    issued_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS citadel_issued_certificates_identity ON citadel_issued_certificates (identity)";

/// Held by whoever issues; cloning is cheap.
#[derive(Clone)]
pub struct Ledger {
    queue: mpsc::Sender<Entry>,
    metrics: Metrics,
}

const QUEUE: usize = 50_000;
const BATCH: usize = 1_000;
const LINGER: Duration = Duration::from_millis(50);

impl Ledger {
    /// Connects, creates the table, and starts the writer, which ends once
    /// every `Ledger` is dropped and the queue is written out.
    pub async fn open(
        url: &str,
        metrics: Metrics,
    ) -> Result<(Ledger, tokio::task::JoinHandle<()>), sqlx::Error> {
        let db = if url.starts_with("sqlite:") {
            // WAL with NORMAL sync: a crash may lose the last moments of
            // the ledger, never corrupt it; fsync per batch cost a quarter
            // of the CPU under load.
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_with(options)
                    .await?,
            )
        } else {
            Db::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect(url)
                    .await?,
            )
        };
        match &db {
            Db::Postgres(p) => sqlx::raw_sql(SCHEMA).execute(p).await.map(|_| ())?,
            Db::Sqlite(p) => sqlx::raw_sql(SCHEMA).execute(p).await.map(|_| ())?,
        }
        let (queue, rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write(db, rx, metrics.clone()));
        Ok((Ledger { queue, metrics }, writer))
    }

    pub fn record(&self, entry: Entry) {
        if self.queue.try_send(entry).is_err() {
            self.metrics.ledger_dropped.inc();
        }
    }
}

async fn write(db: Db, mut rx: mpsc::Receiver<Entry>, metrics: Metrics) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut backoff = Duration::from_millis(100);
    loop {
        if batch.is_empty() {
            if rx.recv_many(&mut batch, BATCH).await == 0 {
                return;
            }
            // Under load, gather what arrives in the next moment too: one
            // transaction per few entries costs more than the entries.
            let linger = tokio::time::sleep(LINGER);
            tokio::pin!(linger);
            while batch.len() < BATCH {
                let room = BATCH - batch.len();
                tokio::select! {
                    _ = &mut linger => break,
                    n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                }
            }
        }
        match insert(&db, &batch).await {
            Ok(()) => {
                metrics.ledger_written.inc_by(batch.len() as u64);
                batch.clear();
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                metrics.ledger_errors.inc();
                tracing::warn!(
                    entries = batch.len(),
                    "ledger write failed, retrying in {backoff:?}: {e}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn insert(db: &Db, batch: &[Entry]) -> Result<(), sqlx::Error> {
    let issued_at = OffsetDateTime::now_utc().unix_timestamp();
    macro_rules! run {
        ($pool:expr) => {{
            let mut q = QueryBuilder::new(
                "INSERT INTO citadel_issued_certificates (serial, identity, not_before, not_after, requester, issued_at) ",
            );
            q.push_values(batch, |mut row, e| {
                row.push_bind(&e.serial)
                    .push_bind(&e.identity)
                    .push_bind(e.not_before.unix_timestamp())
                    .push_bind(e.not_after.unix_timestamp())
                    .push_bind(&e.requester)
                    .push_bind(issued_at);
            });
            // A retried batch may have landed before the error was seen.
            q.push(" ON CONFLICT (serial) DO NOTHING");
            q.build().execute($pool).await.map(|_| ())
        }};
    }
    match db {
        Db::Postgres(p) => run!(p),
        Db::Sqlite(p) => run!(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_reach_sqlite_and_the_writer_drains_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let registry = mesh::metrics::Metrics::default();
        let metrics = Metrics::new(&registry);
        let (ledger, writer) = Ledger::open(&url, metrics.clone()).await.unwrap();
        let now = OffsetDateTime::now_utc();
        for i in 0..3 {
            ledger.record(Entry {
                serial: format!("0{i}"),
                identity: "spiffe://cluster.local/ns/default/sa/a".into(),
                not_before: now,
                not_after: now + Duration::from_secs(60),
                requester: "test".into(),
            });
        }
        drop(ledger);
        writer.await.unwrap();
        assert_eq!(metrics.ledger_written.get(), 3);
        let pool = SqlitePool::connect(&url).await.unwrap();
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM citadel_issued_certificates WHERE identity LIKE '%/sa/a'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(n, 3);
    }
}
