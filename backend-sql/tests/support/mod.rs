//! Opening the backends for the tests: SQLite on a temporary file per test process, PostgreSQL (the machine's, at
//! `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`) in a fresh schema per test process.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tidings_core::Bus;
use tidings_sql::{PostgresConfig, SqlBackend, SqliteConfig};
use tidings_testkit::conformance::{Harness, Timing};

/// Test timing: sub-second backoffs; a 2 s ack deadline, because the runtime extends a lease every half deadline
/// and, on a loaded machine, a SQLite write can wait that long for the lock (with 500 ms, a lease sometimes lapsed
/// mid-handler and the exactly-once ledger saw the message run twice).
pub const TIMING: Timing = Timing {
    ack_deadline: Duration::from_secs(2),
    min_backoff: Duration::from_millis(50),
    max_backoff: Duration::from_millis(200),
    patience: Duration::from_secs(20),
};

pub fn unique() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{}_{}_{}", now.as_secs(), std::process::id(), now.subsec_nanos() % 1_000_000)
}

/// The SQLite file of this test process (under the system temp dir).
pub fn sqlite_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("tidings-sql-tests-{}", unique())).join("bus.db")).clone()
}

pub fn sqlite_config() -> SqliteConfig {
    let mut c = SqliteConfig::at(sqlite_path());
    c.poll_interval = Duration::from_millis(50);
    c
}

pub fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| tidings_sql::config::DEFAULT_POSTGRES_URL.into())
}

/// The schema of this test process; schemas of earlier runs older than an hour are dropped on first use.
pub fn pg_schema() -> String {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    SCHEMA.get_or_init(|| format!("tidings_test_{}", unique())).clone()
}

pub fn pg_config() -> PostgresConfig {
    PostgresConfig::at(pg_url(), pg_schema())
}

/// Panics with instructions when PostgreSQL is not reachable (a failure, never a skip, also under CI=true).
pub async fn require_pg() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    if CHECKED.get().is_some() {
        return;
    }
    let url = pg_url();
    match sqlx::PgPool::connect(&url).await {
        Ok(pool) => {
            drop_old_schemas(&pool).await;
            pool.close().await;
            let _ = CHECKED.set(());
        }
        Err(e) => panic!(
            "the PostgreSQL tests need a server at DATABASE_URL={url} ({e}; CI={}). Start one, e.g. \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (trust auth, database `test`)",
            std::env::var("CI").unwrap_or_default()
        ),
    }
}

async fn drop_old_schemas(pool: &sqlx::PgPool) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'tidings_test_%'")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let hour_ago = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() - 3600;
    for n in names {
        let secs: Option<u64> = n.trim_start_matches("tidings_test_").split('_').next().and_then(|s| s.parse().ok());
        if secs.is_some_and(|s| s < hour_ago) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {n} CASCADE")).execute(pool).await;
        }
    }
}

pub async fn sqlite_backend() -> SqlBackend {
    SqlBackend::sqlite(sqlite_config()).await.expect("open the SQLite backend")
}

pub async fn pg_backend() -> SqlBackend {
    require_pg().await;
    SqlBackend::postgres(pg_config()).await.expect("open the PostgreSQL backend")
}

/// Settings naming the backend and its section, so `publish_in` finds the schema.
pub fn settings(backend: &str) -> tidings_core::Settings {
    let toml = match backend {
        "postgres" => {
            format!("backend = \"postgres\"\n[postgres]\nschema = \"{}\"\nurl = \"{}\"", pg_schema(), pg_url())
        }
        _ => format!("backend = \"sqlite\"\n[sqlite]\npath = {:?}", sqlite_path().display().to_string()),
    };
    tidings_core::Settings::from_toml(&toml).unwrap()
}

pub async fn bus(backend: &str) -> Bus {
    let b = match backend {
        "postgres" => pg_backend().await,
        _ => sqlite_backend().await,
    };
    Bus::builder(Arc::new(b)).settings(settings(backend)).build()
}

pub struct Sqlite;

impl Harness for Sqlite {
    async fn bus(&self) -> Bus {
        bus("sqlite").await
    }
    fn timing(&self) -> Timing {
        TIMING
    }
}

pub struct Postgres;

impl Harness for Postgres {
    async fn bus(&self) -> Bus {
        bus("postgres").await
    }
    fn timing(&self) -> Timing {
        TIMING
    }
}
