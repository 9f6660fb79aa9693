//! SQLite: one active relay per database file, guarded by a lease row; others stand by and take over when the
//! lease expires. Polls (default every 50 ms); a publish through this process's outbox also wakes the relay.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::sqlite::Sqlite;
use sqlx::{Row, SqliteConnection};
use tidings_core::{Bus, MessageId, PublishOptions, Result, Topic};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::relay::{Relay, Store};
use crate::row::{self, Claimed, COLUMNS};
use crate::{db_error, Outbox};

/// How long a SQLite relay's lease lasts without renewal.
const LEASE: Duration = Duration::from_secs(10);

impl Outbox<Sqlite> {
    /// Creates the outbox table, its index and the relay lease table if they do not exist, and adds the `deliver_at`
    /// column to a table created by tidings-outbox 0.1.
    pub async fn migrate(&self) -> Result<()> {
        let t = &self.table;
        let ddl = [
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, \
                 exactly_once BOOLEAN NOT NULL, ordered BOOLEAN NOT NULL, message_id TEXT NOT NULL, \
                 payload BLOB NOT NULL, attributes TEXT NOT NULL, ordering_key TEXT, created_at INTEGER NOT NULL, \
                 deliver_at INTEGER)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {t}_topic_seq ON {t} (topic, seq)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {t}_relay (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, \
                 expires_at INTEGER NOT NULL)"
            ),
        ];
        for sql in ddl {
            sqlx::query(&sql).execute(&self.pool).await.map_err(|e| db_error("migrate", e))?;
        }
        // A table from 0.1 lacks the due-time column. Adding a nullable column rewrites nothing; when two processes
        // migrate at once, the second ALTER fails on the column the first added, which is what was wanted.
        let look = "SELECT count(*) FROM pragma_table_info(?1) WHERE name = 'deliver_at'";
        let has = || async { sqlx::query_scalar::<_, i64>(look).bind(t.to_string()).fetch_one(&self.pool).await };
        if has().await.map_err(|e| db_error("migrate", e))? == 0 {
            let added =
                sqlx::query(&format!("ALTER TABLE {t} ADD COLUMN deliver_at INTEGER")).execute(&self.pool).await;
            if let Err(e) = added {
                if has().await.map_err(|e| db_error("migrate", e))? == 0 {
                    return Err(db_error("migrate (adding the deliver_at column)", e));
                }
            }
        }
        Ok(())
    }

    /// Writes `message` for `topic` into the outbox inside the caller's transaction; returns its message id. It is
    /// published once the transaction commits, and never if it rolls back.
    pub async fn publish<T: Serialize>(
        &self,
        tx: &mut SqliteConnection,
        topic: &Topic<T>,
        message: &T,
    ) -> Result<MessageId> {
        self.publish_with(tx, topic, message, PublishOptions::default()).await
    }

    /// [`Outbox::publish`] with [`PublishOptions`]: attributes, an ordering key, an id, a due time
    /// ([`PublishOptions::deliver_at`] / [`PublishOptions::deliver_after`]: the row keeps it and the relay publishes at
    /// once with it, so no subscription gets the message before then).
    pub async fn publish_with<T: Serialize>(
        &self,
        tx: &mut SqliteConnection,
        topic: &Topic<T>,
        message: &T,
        options: PublishOptions,
    ) -> Result<MessageId> {
        let (r, id) = crate::prepare(&self.bus, topic, message, options)?;
        let sql = format!(
            "INSERT INTO {} (topic, exactly_once, ordered, message_id, payload, attributes, ordering_key, created_at, \
             deliver_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.table
        );
        sqlx::query(&sql)
            .bind(r.topic)
            .bind(r.exactly_once)
            .bind(r.ordered)
            .bind(r.message_id)
            .bind(r.payload)
            .bind(r.attributes)
            .bind(r.ordering_key)
            .bind(r.created_at)
            .bind(r.deliver_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| crate::table_error(&self.table, "writing to the outbox", e))?;
        self.wake.notify_one();
        Ok(id)
    }

    /// A relay for this outbox (polls every 50 ms).
    pub fn relay(&self) -> Relay {
        let t = &self.table;
        let store = SqliteStore {
            pool: self.pool.clone(),
            table: self.table.to_string(),
            wake: self.wake.clone(),
            owner: uuid::Uuid::now_v7().to_string(),
            lease_until: std::sync::Mutex::new(None),
            heads: format!("SELECT topic, min(seq) AS head FROM {t} GROUP BY topic ORDER BY head"),
            claim: format!("SELECT {COLUMNS} FROM {t} WHERE topic = ? ORDER BY seq LIMIT ?"),
            delete: format!("DELETE FROM {t} WHERE topic = ? AND seq <= ?"),
            pending: format!("SELECT count(*) AS n, min(created_at) AS oldest FROM {t}"),
            lag: crate::relay::lag_histogram(t),
            release: format!("UPDATE {t}_relay SET expires_at = 0 WHERE id = 1 AND owner = ?1"),
            lease: format!(
                "INSERT INTO {t}_relay (id, owner, expires_at) VALUES (1, ?1, ?2) ON CONFLICT (id) DO UPDATE SET \
                 owner = excluded.owner, expires_at = excluded.expires_at \
                 WHERE {t}_relay.owner = excluded.owner OR {t}_relay.expires_at < ?3"
            ),
        };
        Relay::new(Arc::new(store), self.bus.clone(), Duration::from_millis(50), self.table.clone())
    }
}

struct SqliteStore {
    pool: sqlx::SqlitePool,
    table: String,
    wake: Arc<Notify>,
    owner: String,
    lease_until: std::sync::Mutex<Option<Instant>>,
    heads: String,
    claim: String,
    delete: String,
    lease: String,
    /// Hands the lease over (a graceful stop).
    release: String,
    pending: String,
    lag: metrics::Histogram,
}

#[async_trait]
impl Store for SqliteStore {
    async fn acquire(&self) -> Result<bool> {
        let now = Instant::now();
        if self.lease_until.lock().unwrap().is_some_and(|until| until > now + LEASE / 2) {
            return Ok(true);
        }
        let now_us = tidings_core::backend::time::micros(std::time::SystemTime::now());
        let done = sqlx::query(&self.lease)
            .bind(&self.owner)
            .bind(now_us + LEASE.as_micros() as i64)
            .bind(now_us)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("taking the relay lease", e))?;
        let held = done.rows_affected() == 1;
        *self.lease_until.lock().unwrap() = held.then_some(now + LEASE);
        Ok(held)
    }

    async fn release(&self) -> Result<()> {
        *self.lease_until.lock().unwrap() = None;
        sqlx::query(&self.release)
            .bind(&self.owner)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("handing over the relay lease", e))?;
        Ok(())
    }

    async fn relay_batch(
        &self,
        bus: &Bus,
        max: usize,
        paused: &[String],
    ) -> std::result::Result<usize, (String, tidings_core::Error)> {
        let err = |what: &str, e: sqlx::Error| (String::new(), db_error(what, e));
        let heads = sqlx::query(&self.heads).fetch_all(&self.pool).await.map_err(|e| err("finding topics", e))?;
        let topic = heads.iter().filter_map(|r| r.try_get::<String, _>("topic").ok()).find(|t| !paused.contains(t));
        let Some(topic) = topic else { return Ok(0) };
        let rows = sqlx::query(&self.claim)
            .bind(&topic)
            .bind(max as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| (String::new(), crate::table_error(&self.table, "reading rows", e)))?;
        let claimed = rows.iter().map(Claimed::from_row).collect::<Result<Vec<_>>>().map_err(|e| (topic.clone(), e))?;
        let (n, last) = (claimed.len(), claimed.last().map_or(0, |c| c.seq));
        row::publish(bus, &topic, claimed, &self.lag).await.map_err(|e| (topic.clone(), e))?;
        // One writer at a time in SQLite, so seq order is commit order and `seq <= last` is exactly this batch.
        sqlx::query(&self.delete)
            .bind(&topic)
            .bind(last)
            .execute(&self.pool)
            .await
            .map_err(|e| err("deleting relayed rows", e))?;
        Ok(n)
    }

    async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }

    async fn pending(&self) -> Result<(u64, Option<i64>)> {
        let r = sqlx::query(&self.pending).fetch_one(&self.pool).await.map_err(|e| db_error("counting rows", e))?;
        let n: i64 = r.try_get("n").map_err(|e| db_error("counting rows", e))?;
        let oldest: Option<i64> = r.try_get("oldest").map_err(|e| db_error("counting rows", e))?;
        Ok((n as u64, oldest))
    }
}
