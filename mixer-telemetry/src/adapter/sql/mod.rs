//! The `sql` adapter (Trireme's own; Istio had none): `logentry` instances
//! as rows in SQLite (the default, for one machine) or PostgreSQL, through
//! sqlx. Rows wait in a bounded buffer and a writer inserts them in batches;
//! while the database is away they stay buffered, and once the buffer is
//! full new rows are dropped and counted. The writer reconnects, migrates
//! and resumes on its own.

mod db;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mixer::adapter::{Adapter, Handler, ParamsError, params};
use mixer::attribute::Value;
use mixer::expr::functions::format_rfc3339;
use mixer::template::{Instance, Template};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use serde_json::Value as Json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::stdio::json_value;
pub use db::Row;
use db::{Db, supported};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

/// The adapter's metrics, by table.
#[derive(Clone, Default)]
pub struct SqlMetrics {
    pub written: Family<TableLabel, Counter>,
    pub dropped: Family<TableLabel, Counter>,
    pub write_errors: Family<TableLabel, Counter>,
    pub buffered: Family<TableLabel, Gauge>,
}

impl SqlMetrics {
    pub fn register(&self, r: &mesh::metrics::Metrics) {
        r.register(
            "mixer_sql_rows_written",
            "Log rows inserted, by table",
            self.written.clone(),
        );
        r.register(
            "mixer_sql_rows_dropped",
            "Log rows dropped because the buffer was full (the database away), by table",
            self.dropped.clone(),
        );
        r.register(
            "mixer_sql_write_errors",
            "Failed connections, migrations and inserts, by table",
            self.write_errors.clone(),
        );
        r.register(
            "mixer_sql_buffered_rows",
            "Log rows waiting for the database, by table",
            self.buffered.clone(),
        );
    }
}

/// Builds `sql` handlers; their writers end, flushing what they hold, when
/// `stop` is cancelled (after the last report is dispatched), and `tasks`
/// tells when they have.
pub struct Sql {
    pub metrics: SqlMetrics,
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    /// `sqlite://path.db` or `postgres://user@host:port/db`.
    #[serde(default = "default_url")]
    url: String,
    #[serde(default = "default_table")]
    table: String,
    #[serde(default = "default_batch")]
    batch_size: usize,
    #[serde(default = "default_flush")]
    flush_interval: api::duration::IstioDuration,
    #[serde(default = "default_buffer")]
    buffer_size: usize,
}

fn default_url() -> String {
    "sqlite://mixer-telemetry-logs.db".into()
}
fn default_table() -> String {
    "istio_log_entries".into()
}
fn default_batch() -> usize {
    500
}
fn default_flush() -> api::duration::IstioDuration {
    api::duration::IstioDuration(Duration::from_secs(1))
}
fn default_buffer() -> usize {
    100_000
}

fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Adapter for Sql {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn templates(&self) -> &'static [Template] {
        &[Template::LogEntry]
    }

    fn build(&self, json: &Json) -> Result<Arc<dyn Handler>, ParamsError> {
        let p: Params = params(json)?;
        if !supported(&p.url) {
            return Err(ParamsError::new(
                "url",
                format!("{:?}: expected sqlite:… or postgres://…", p.url),
            ));
        }
        if !identifier(&p.table) {
            return Err(ParamsError::new(
                "table",
                format!(
                    "{:?} is not a plain SQL identifier (letters, digits, _)",
                    p.table
                ),
            ));
        }
        if p.batch_size == 0 || p.buffer_size == 0 || p.flush_interval.as_duration().is_zero() {
            return Err(ParamsError::new(
                "",
                "batchSize, bufferSize and flushInterval must be positive",
            ));
        }
        let label = TableLabel {
            table: p.table.clone(),
        };
        let shared = Arc::new(Shared {
            rows: Mutex::default(),
            wake: Notify::new(),
            buffered: self.metrics.buffered.get_or_create(&label).clone(),
            dropped: self.metrics.dropped.get_or_create(&label).clone(),
            params: p,
        });
        let stop = self.stop.child_token();
        self.tasks.spawn(write(
            shared.clone(),
            self.metrics.written.get_or_create(&label).clone(),
            self.metrics.write_errors.get_or_create(&label).clone(),
            stop.clone(),
        ));
        Ok(Arc::new(SqlHandler {
            shared,
            _stop: stop.drop_guard(),
        }))
    }
}

struct Shared {
    params: Params,
    rows: Mutex<VecDeque<Row>>,
    wake: Notify,
    buffered: Gauge,
    dropped: Counter,
}

struct SqlHandler {
    shared: Arc<Shared>,
    /// A replaced handler's writer flushes and ends.
    _stop: tokio_util::sync::DropGuard,
}

fn row(instance: &Instance) -> Row {
    let time = match instance.value("timestamp") {
        Some(Value::Timestamp(t)) => *t,
        _ => SystemTime::now(),
    };
    let variables: serde_json::Map<String, Json> = instance
        .map("variables")
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), json_value(v)))
        .collect();
    Row {
        instance: instance.name.to_string(),
        severity: instance
            .value("severity")
            .map(Value::to_string)
            .unwrap_or_else(|| "Default".into()),
        time: format_rfc3339(time.duration_since(UNIX_EPOCH).unwrap_or_default()),
        variables: Json::Object(variables).to_string(),
    }
}

#[async_trait]
impl Handler for SqlHandler {
    async fn report(&self, instances: &[Instance]) -> Result<(), String> {
        let s = &self.shared;
        let cap = s.params.buffer_size;
        let (dropped, len) = {
            let mut rows = s.rows.lock().unwrap_or_else(|p| p.into_inner());
            let room = cap.saturating_sub(rows.len());
            rows.extend(instances.iter().take(room).map(row));
            (instances.len().saturating_sub(room), rows.len())
        };
        s.buffered.set(len as i64);
        if len >= s.params.batch_size {
            s.wake.notify_one();
        }
        if dropped > 0 {
            s.dropped.inc_by(dropped as u64);
            return Err(format!(
                "{dropped} rows dropped: the buffer of {cap} is full (is the database away?)"
            ));
        }
        Ok(())
    }
}

/// Inserts buffered rows in batches every `flushInterval` (sooner when a
/// batch is full); connects and migrates on first use and after a failure.
/// Rows leave the buffer only once inserted. On `stop`, drains what it can.
async fn write(shared: Arc<Shared>, written: Counter, errors: Counter, stop: CancellationToken) {
    let p = &shared.params;
    let mut db: Option<Db> = None;
    let mut last_complaint: Option<Instant> = None;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = shared.wake.notified() => false,
            _ = tokio::time::sleep(p.flush_interval.as_duration()) => false,
        };
        loop {
            let batch: Vec<Row> = {
                let rows = shared.rows.lock().unwrap_or_else(|p| p.into_inner());
                rows.iter().take(p.batch_size).cloned().collect()
            };
            if batch.is_empty() {
                break;
            }
            let result = match &db {
                Some(d) => d.insert(&p.table, &batch).await,
                None => match open(&p.url, &p.table).await {
                    Ok(d) => {
                        tracing::info!(table = %p.table, "sql: connected and migrated");
                        db = Some(d);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    let left = {
                        let mut rows = shared.rows.lock().unwrap_or_else(|p| p.into_inner());
                        rows.drain(..batch.len());
                        rows.len()
                    };
                    written.inc_by(batch.len() as u64);
                    shared.buffered.set(left as i64);
                }
                Err(e) => {
                    errors.inc();
                    db = None;
                    // Said once a minute, not once a flush.
                    if last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        last_complaint = Some(Instant::now());
                        tracing::warn!(table = %p.table, "sql: cannot write; rows stay buffered: {e}");
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

async fn open(url: &str, table: &str) -> Result<Db, sqlx::Error> {
    let db = Db::connect(url).await?;
    db.migrate(table).await?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mixer::template::FieldValue;

    use super::*;

    fn adapter() -> Sql {
        Sql {
            metrics: SqlMetrics::default(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    fn entry(code: i64) -> Instance {
        let vars: BTreeMap<String, Value> = [
            ("responseCode".to_string(), Value::Int64(code)),
            ("url".to_string(), Value::string("/reviews/1")),
        ]
        .into();
        Instance {
            name: "accesslog.instance.istio-system".into(),
            template: Template::LogEntry,
            fields: vec![
                ("severity", FieldValue::Value(Value::string("Info"))),
                (
                    "timestamp",
                    FieldValue::Value(Value::Timestamp(
                        UNIX_EPOCH + Duration::from_secs(1_600_000_000),
                    )),
                ),
                ("variables", FieldValue::Map(vars)),
            ],
        }
    }

    #[tokio::test]
    async fn rows_reach_sqlite_in_batches_and_survive_a_flush_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("logs.db").display());
        let a = adapter();
        let h = a
            .build(&serde_json::json!({"url": url, "table": "access", "flushInterval": "50ms"}))
            .unwrap();
        h.report(&[entry(200), entry(503)]).await.unwrap();
        a.stop.cancel();
        a.tasks.close();
        a.tasks.wait().await;
        let db = Db::connect(&url).await.unwrap();
        let Db::Sqlite(pool) = &db else {
            panic!("sqlite")
        };
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT instance, severity, logged_at, variables FROM access ORDER BY id",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, "accesslog.instance.istio-system");
        assert_eq!(rows[0].2, "2020-09-13T12:26:40Z");
        let vars: Json = serde_json::from_str(&rows[1].3).unwrap();
        assert_eq!(
            vars,
            serde_json::json!({"responseCode": 503, "url": "/reviews/1"})
        );
        // Migrating again is a no-op.
        db.migrate("access").await.unwrap();
        let written = a
            .metrics
            .written
            .get_or_create(&TableLabel {
                table: "access".into(),
            })
            .get();
        assert_eq!(written, 2);
    }

    #[tokio::test]
    async fn an_unreachable_database_keeps_rows_up_to_the_buffer_and_counts_the_rest() {
        let a = adapter();
        // Nothing listens on port 1.
        let h = a
            .build(&serde_json::json!({"url": "postgres://nobody@127.0.0.1:1/none", "bufferSize": 3, "flushInterval": "20ms"}))
            .unwrap();
        h.report(&[entry(200), entry(200)]).await.unwrap();
        let err = h.report(&[entry(200), entry(200)]).await.unwrap_err();
        assert_eq!(
            err,
            "1 rows dropped: the buffer of 3 is full (is the database away?)"
        );
        let label = TableLabel {
            table: "istio_log_entries".into(),
        };
        assert_eq!(a.metrics.dropped.get_or_create(&label).get(), 1);
        assert_eq!(a.metrics.buffered.get_or_create(&label).get(), 3);
        wait_until(|| a.metrics.write_errors.get_or_create(&label).get() > 0).await;
    }

    async fn wait_until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn bad_params_name_the_field() {
        let a = adapter();
        let err = |j: Json| a.build(&j).err().unwrap().to_string();
        assert!(err(serde_json::json!({"url": "mysql://x"})).starts_with("url:"));
        assert!(err(serde_json::json!({"table": "logs; DROP TABLE x"})).starts_with("table:"));
        assert!(err(serde_json::json!({"tabel": "x"})).contains("tabel"));
    }
}
