//! The two databases the sql adapter writes to, behind one small interface:
//! connect, migrate, insert a batch. SQLite for one machine, PostgreSQL for
//! a cluster; the rows are the same.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
// The table name is checked to be a plain identifier when the handler is
// built: it is the only text put into statements, and it cannot inject.
use sqlx::{AssertSqlSafe, PgPool, Postgres, QueryBuilder, Sqlite, SqlitePool};

/// One log entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub instance: String,
    pub severity: String,
    /// RFC 3339.
    pub time: String,
    /// The entry's variables as a JSON object.
    pub variables: String,
}

pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Schema changes in order; each runs once per database, recorded in
/// `trireme_sql_migrations`. `{table}` is the handler's table.
const POSTGRES_MIGRATIONS: &[(&str, &str)] = &[(
    "1-create",
    "CREATE TABLE IF NOT EXISTS {table} (id BIGSERIAL PRIMARY KEY, instance TEXT NOT NULL, severity TEXT NOT NULL, logged_at TIMESTAMPTZ NOT NULL, variables JSONB NOT NULL);
     CREATE INDEX IF NOT EXISTS {table}_logged_at ON {table} (logged_at)",
)];
const SQLITE_MIGRATIONS: &[(&str, &str)] = &[(
    "1-create",
    "CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY AUTOINCREMENT, instance TEXT NOT NULL, severity TEXT NOT NULL, logged_at TEXT NOT NULL, variables TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS {table}_logged_at ON {table} (logged_at)",
)];

/// Whether `url` names a database this adapter can write to.
pub fn supported(url: &str) -> bool {
    ["postgres://", "postgresql://", "sqlite:"]
        .iter()
        .any(|p| url.starts_with(p))
}

impl Db {
    pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(2))
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(2))
                .connect(url)
                .await?;
            Ok(Db::Postgres(pool))
        }
    }

    /// Runs the migrations this database has not seen, each in a
    /// transaction with its ledger entry (whose insert tells whether it is new).
    pub async fn migrate(&self, table: &str) -> Result<(), sqlx::Error> {
        // The same statements on either pool: the pools' types differ.
        macro_rules! run {
            ($pool:expr, $migrations:expr) => {{
                sqlx::raw_sql(LEDGER).execute($pool).await?;
                for (name, sql) in $migrations {
                    let mut tx = $pool.begin().await?;
                    let mark = format!(
                        "INSERT INTO trireme_sql_migrations (name) VALUES ('{table}/{name}') ON CONFLICT DO NOTHING"
                    );
                    let new = sqlx::raw_sql(AssertSqlSafe(mark)).execute(&mut *tx).await?.rows_affected() == 1;
                    if new {
                        sqlx::raw_sql(AssertSqlSafe(sql.replace("{table}", table))).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                }
            }};
        }
        const LEDGER: &str =
            "CREATE TABLE IF NOT EXISTS trireme_sql_migrations (name TEXT PRIMARY KEY)";
        match self {
            Db::Postgres(pool) => run!(pool, POSTGRES_MIGRATIONS),
            Db::Sqlite(pool) => run!(pool, SQLITE_MIGRATIONS),
        }
        Ok(())
    }

    /// Inserts `rows` in one statement.
    pub async fn insert(&self, table: &str, rows: &[Row]) -> Result<(), sqlx::Error> {
        let head = format!("INSERT INTO {table} (instance, severity, logged_at, variables) ");
        match self {
            Db::Postgres(pool) => {
                let mut q = QueryBuilder::<Postgres>::new(head);
                q.push_values(rows, |mut b, r| {
                    b.push_bind(&r.instance)
                        .push_bind(&r.severity)
                        .push_bind(&r.time)
                        .push_unseparated("::timestamptz")
                        .push_bind(&r.variables)
                        .push_unseparated("::jsonb");
                });
                q.build().execute(pool).await?;
            }
            Db::Sqlite(pool) => {
                let mut q = QueryBuilder::<Sqlite>::new(head);
                q.push_values(rows, |mut b, r| {
                    b.push_bind(&r.instance)
                        .push_bind(&r.severity)
                        .push_bind(&r.time)
                        .push_bind(&r.variables);
                });
                q.build().execute(pool).await?;
            }
        }
        Ok(())
    }
}
