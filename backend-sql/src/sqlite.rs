//! SQLite: one file shared by the processes of one host, in WAL mode with a busy timeout. Other processes' commits
//! are seen by a watcher that polls `PRAGMA data_version` on a connection of its own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Sqlite, SqliteConnection};
use tidings_core::{Error, Result};

use crate::config::{Provisioning, SqliteConfig};
use crate::error::db_error;
use crate::own_lock::OwnLock;
use crate::schema::{self, Tables};
use crate::sql::{Dialect, Sql};
use crate::store::SqlStore;
use crate::wake::Wake;
use crate::SqlBackend;

crate::store::impl_store!(Sqlite, SqliteConnection);

/// Fastest look at `PRAGMA data_version`, right after a change.
const WATCH_MIN: Duration = Duration::from_millis(2);

fn options(config: &SqliteConfig) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(&config.path)
        .create_if_missing(config.provisioning == Provisioning::Auto)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(config.busy_timeout)
}

pub(crate) async fn open(config: SqliteConfig) -> Result<SqlBackend> {
    let path = config.path.display().to_string();
    if config.provisioning == Provisioning::Auto {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::config(format!("sqlite.path {path:?}: cannot create its directory {}: {e}", dir.display()))
            })?;
        }
    }
    let opts = options(&config);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(config.busy_timeout + Duration::from_secs(5))
        .connect_with(opts.clone())
        .await
        .map_err(|e| Error::config(format!("sqlite.path {path:?}: cannot open the database: {e}")).with_source(e))?;
    let sql = Sql::new(Dialect::Sqlite, Tables::sqlite());
    migrate(&pool, &sql, config.provisioning, &path).await?;
    let wake = Arc::new(Wake::new(config.poll_interval, Duration::from_secs(1)));
    let watcher = SqliteConnection::connect_with(&opts)
        .await
        .map_err(|e| db_error(&format!("opening a watcher connection to {path}"), e))?;
    let own_lock = Some(OwnLock::new(&config.path, config.busy_timeout));
    let store = Arc::new(SqlStore { pool, sql, channel: None, own_lock });
    let backend = SqlBackend::new("sqlite", store, wake.clone(), config.max_message_size, config.provisioning);
    wake.signalled.store(true, Ordering::Release);
    let task = tokio::spawn(watch(watcher, Arc::downgrade(&wake), config.poll_interval.max(WATCH_MIN)));
    backend.own_task(task.abort_handle());
    Ok(backend)
}

async fn migrate(pool: &sqlx::SqlitePool, sql: &Sql, provisioning: Provisioning, path: &str) -> Result<()> {
    let where_ = format!("the SQLite database {path:?}");
    let v = &sql.tables.version;
    if provisioning == Provisioning::Auto {
        // Already migrated (every start but the first): read the version without DDL, which takes table locks even
        // when nothing is to be created (PostgreSQL's CREATE INDEX IF NOT EXISTS deadlocked with a running
        // transaction deleting a subscription).
        let current = sqlx::query_scalar::<_, i64>(&format!("SELECT version FROM {v}")).fetch_optional(pool).await;
        if let Ok(Some(found)) = current {
            return schema::check_version(found, &where_);
        }
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(|e| db_error("beginning migrations", e))?;
        for ddl in schema::ddl(&sql.tables, &schema::SQLITE_TYPES) {
            sqlx::query(&ddl).execute(&mut *tx).await.map_err(|e| db_error("migrating", e))?;
        }
        let found: Vec<i64> = sqlx::query_scalar(&format!("SELECT version FROM {v}"))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error("reading the schema version", e))?;
        match found.first() {
            Some(&found) => schema::check_version(found, &where_)?,
            None => {
                sqlx::query(&format!("INSERT INTO {v} (version) VALUES ($1)"))
                    .bind(schema::SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("writing the schema version", e))?;
            }
        }
        return tx.commit().await.map_err(|e| db_error("committing migrations", e));
    }
    let found: Option<i64> = sqlx::query_scalar(&format!("SELECT version FROM {v}"))
        .fetch_optional(pool)
        .await
        .map_err(|e| schema::not_provisioned(&where_, e))?;
    match found {
        Some(found) => schema::check_version(found, &where_),
        None => Err(schema::not_provisioned(&where_, format!("{v} is empty"))),
    }
}

/// Wakes every receiver of this backend when another connection (another process, or this one's pool) commits.
async fn watch(mut conn: SqliteConnection, wake: std::sync::Weak<Wake>, max: Duration) {
    let mut last: Option<i64> = None;
    let mut pause = WATCH_MIN;
    loop {
        tokio::time::sleep(pause).await;
        let Some(wake) = wake.upgrade() else { return };
        match sqlx::query_scalar::<_, i64>("PRAGMA data_version").fetch_one(&mut conn).await {
            Ok(v) if last.is_some_and(|l| l != v) => {
                last = Some(v);
                pause = WATCH_MIN;
                wake.notify_all();
            }
            Ok(v) => {
                last = Some(v);
                pause = (pause * 2).min(max);
            }
            Err(e) => {
                tracing::warn!(error = %e, "sqlite: PRAGMA data_version failed; receivers poll meanwhile");
                wake.signalled.store(false, Ordering::Release);
                pause = max;
                continue;
            }
        }
        wake.signalled.store(true, Ordering::Release);
    }
}
