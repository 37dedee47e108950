//! The `sql` adapter (Trireme's own; Istio had none): `logentry` instances
//! as rows in SQLite (the default, for one machine) or PostgreSQL, through
//! sqlx. Rows wait in a bounded buffer and a writer inserts them in batches;
//! while the database is away they stay buffered, and once the buffer is
//! full new rows are dropped and counted. The writer reconnects, migrates
//! and resumes on its own.

mod db;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mixer::adapter::{Adapter, Handler, ParamsError, params};
use mixer::attribute::Value;
use mixer::expr::functions::format_rfc3339;
use mixer::template::{Instance, Template};
use serde::Deserialize;
use serde_json::Value as Json;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::outbox::{self, Names, Outbox, OutboxMetrics, Sink};
use super::stdio::json_value;
pub use db::Row;
use db::{Db, supported};

pub const METRICS: Names = Names {
    label: "table",
    sent: "mixer_sql_rows_written",
    dropped: "mixer_sql_rows_dropped",
    errors: "mixer_sql_write_errors",
    buffered: "mixer_sql_buffered_rows",
    items: "Log rows",
};

/// Builds `sql` handlers; their writers end, flushing what they hold, when
/// `stop` is cancelled (after the last report is dispatched), and `tasks`
/// tells when they have.
pub struct Sql {
    pub metrics: OutboxMetrics,
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
    #[serde(default = "outbox::default_batch")]
    batch_size: usize,
    #[serde(default = "outbox::default_flush")]
    flush_interval: api::duration::IstioDuration,
    #[serde(default = "outbox::default_buffer")]
    buffer_size: usize,
}

fn default_url() -> String {
    "sqlite://mixer-telemetry-logs.db".into()
}
fn default_table() -> String {
    "istio_log_entries".into()
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
        let limits = outbox::limits(p.batch_size, p.buffer_size, &p.flush_interval)?;
        let outbox = Arc::new(Outbox::new(limits, &self.metrics, &p.table));
        let stop = self.stop.child_token();
        let sink = Database {
            url: p.url,
            table: p.table,
            db: None,
        };
        self.tasks.spawn(outbox::run(
            outbox.clone(),
            sink,
            self.metrics.clone(),
            stop.clone(),
        ));
        Ok(Arc::new(SqlHandler {
            outbox,
            _stop: stop.drop_guard(),
        }))
    }
}

struct SqlHandler {
    outbox: Arc<Outbox<Row>>,
    /// A replaced handler's writer flushes and ends.
    _stop: DropGuard,
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
        .map(|(k, v)| (k.to_string(), json_value(v)))
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
        self.outbox.push(instances.iter().map(row))
    }
}

/// The database, connected (and migrated) on first use and after a failure.
struct Database {
    url: String,
    table: String,
    db: Option<Db>,
}

#[async_trait]
impl Sink<Row> for Database {
    async fn send(&mut self, rows: &[Row]) -> Result<(), String> {
        if self.db.is_none() {
            let db = Db::connect(&self.url).await.map_err(|e| e.to_string())?;
            db.migrate(&self.table).await.map_err(|e| e.to_string())?;
            tracing::info!(table = %self.table, "sql: connected and migrated");
            self.db = Some(db);
        }
        let Some(db) = &self.db else {
            return Err("not connected".into());
        };
        let result = db.insert(&self.table, rows).await;
        if result.is_err() {
            self.db = None;
        }
        result.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use mixer::template::{FieldValue, ValueMap};

    use std::time::{Duration, Instant};

    use super::*;

    fn adapter() -> Sql {
        Sql {
            metrics: OutboxMetrics::new(&METRICS, &mesh::metrics::Metrics::default()),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    fn entry(code: i64) -> Instance {
        let vars: ValueMap = [
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
        assert_eq!(a.metrics.get("access"), (2, 0, 0, 0));
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
            "1 dropped: the buffer of 3 is full (is istio_log_entries away?)"
        );
        let (_, dropped, _, buffered) = a.metrics.get("istio_log_entries");
        assert_eq!((dropped, buffered), (1, 3));
        wait_until(|| a.metrics.get("istio_log_entries").2 > 0).await;
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
