//! PostgreSQL: a schema of its own, migrations under an advisory lock, and a listener connection that turns
//! `NOTIFY` into wake-ups (polling at `postgres.poll_interval` while it reconnects).

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};
use tidings_core::{Error, Result};

use crate::config::{validate_schema, PostgresConfig, Provisioning};
use crate::error::db_error;
use crate::schema::{self, Tables};
use crate::sql::{Dialect, Sql};
use crate::store::SqlStore;
use crate::wake::Wake;
use crate::SqlBackend;

crate::store::impl_store!(Postgres, PgConnection);

/// Longest wait for a subscription with nothing due while the listener is connected.
const IDLE: Duration = Duration::from_secs(10);
/// How long a connection (at start, or for a query) is retried before the error is returned.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The NOTIFY channel of a schema.
pub(crate) fn channel(schema: &str) -> String {
    format!("tidings_{schema}")
}

pub(crate) async fn open(config: PostgresConfig) -> Result<SqlBackend> {
    validate_schema(&config.schema)?;
    let url = config.resolved_url();
    let opts = PgConnectOptions::from_str(&url)
        .map_err(|e| Error::config(format!("postgres.url (or DATABASE_URL) is not a PostgreSQL URL: {e}")))?;
    let server = format!(
        "PostgreSQL at {}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or(opts.get_username())
    );
    let pool_opts = PgPoolOptions::new().max_connections(config.max_connections).acquire_timeout(CONNECT_TIMEOUT);
    // The pool retries a refused or failed connection, with backoff, until its acquire timeout.
    let pool = pool_opts.connect_with(opts).await.map_err(|e| {
        Error::backend(
            format!(
                "cannot connect to {server} (postgres.url or DATABASE_URL), retried for {} s: {e}",
                CONNECT_TIMEOUT.as_secs()
            ),
            true,
        )
        .with_source(e)
    })?;
    let sql = Sql::new(Dialect::Postgres, Tables::postgres(&config.schema));
    migrate(&pool, &sql, &config.schema, config.provisioning, &server).await?;
    let wake = Arc::new(Wake::new(config.poll_interval, IDLE));
    let channel = channel(&config.schema);
    let store = Arc::new(SqlStore { pool: pool.clone(), sql, channel: Some(channel.clone()), own_lock: None });
    let backend = SqlBackend::new("postgres", store, wake.clone(), config.max_message_size, config.provisioning);
    let task = tokio::spawn(listen(pool, channel, Arc::downgrade(&wake), config.poll_interval));
    backend.own_task(task.abort_handle());
    Ok(backend)
}

async fn migrate(pool: &PgPool, sql: &Sql, schema: &str, provisioning: Provisioning, server: &str) -> Result<()> {
    let where_ = format!("schema {schema:?} of {server}");
    let v = &sql.tables.version;
    if provisioning == Provisioning::Auto {
        // Already migrated (every start but the first): read the version without DDL, which takes table locks even
        // when nothing is to be created (PostgreSQL's CREATE INDEX IF NOT EXISTS deadlocked with a running
        // transaction deleting a subscription).
        let current = sqlx::query_scalar::<_, i64>(&format!("SELECT version FROM {v}")).fetch_optional(pool).await;
        if let Ok(Some(found)) = current {
            return schema::check_version(found, &where_);
        }
        let mut tx = pool.begin().await.map_err(|e| db_error("beginning migrations", e))?;
        // Processes starting together migrate one at a time (CREATE ... IF NOT EXISTS races otherwise).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("tidings-sql {schema}"))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("locking for migrations", e))?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("creating the schema", e))?;
        for ddl in schema::ddl(&sql.tables, &schema::POSTGRES_TYPES) {
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

/// Turns notifications (payload: the topic) into wake-ups. A lost connection is re-established by the listener;
/// notifications sent meanwhile are lost, so every receiver is woken to look.
async fn listen(pool: PgPool, channel: String, wake: std::sync::Weak<Wake>, retry: Duration) {
    let mut listener: Option<PgListener> = None;
    loop {
        if wake.strong_count() == 0 {
            return;
        }
        let l = match listener.as_mut() {
            Some(l) => l,
            None => match connect(&pool, &channel).await {
                Ok(l) => {
                    if let Some(w) = wake.upgrade() {
                        w.signalled.store(true, Ordering::Release);
                        w.notify_all();
                    }
                    listener.insert(l)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "postgres: LISTEN failed; receivers poll meanwhile");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            },
        };
        // The backend aborts this task when it is dropped.
        let got = l.try_recv().await;
        let Some(w) = wake.upgrade() else { return };
        match got {
            Ok(Some(n)) => w.notify(n.payload()),
            Ok(None) => w.notify_all(),
            Err(e) => {
                tracing::warn!(error = %e, "postgres: notification stream failed; receivers poll meanwhile");
                w.signalled.store(false, Ordering::Release);
                w.notify_all();
                listener = None;
                drop(w);
                tokio::time::sleep(retry).await;
            }
        }
    }
}

async fn connect(pool: &PgPool, channel: &str) -> std::result::Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect_with(pool).await?;
    l.listen(channel).await?;
    Ok(l)
}
