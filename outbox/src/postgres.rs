//! PostgreSQL: `FOR UPDATE SKIP LOCKED` on each topic's oldest row so relays share topics, and `LISTEN/NOTIFY` so a
//! commit wakes a relay at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::postgres::{PgListener, Postgres};
use sqlx::{PgConnection, Row};
use tidings_core::{Bus, MessageId, PublishOptions, Result, Topic};
use tokio::sync::Mutex;

use crate::relay::{Relay, Store};
use crate::row::{self, Claimed, COLUMNS};
use crate::{db_error, Outbox};

impl Outbox<Postgres> {
    /// Creates the outbox table and its index if they do not exist, and adds the `deliver_at` column to a table
    /// created by tidings-outbox 0.1. When all of it exists it only looks (DDL such as `CREATE INDEX IF NOT EXISTS`
    /// takes a lock on the table even when there is nothing to create, waiting behind the relay's transactions).
    pub async fn migrate(&self) -> Result<()> {
        let t = &self.table;
        let present: bool = sqlx::query_scalar(
            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attname = 'deliver_at' AND NOT attisdropped)",
        )
        .bind(t.to_string())
        .bind(format!("{t}_topic_seq"))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db_error("migrate", e))?;
        if present {
            return Ok(());
        }
        let ddl = [
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (seq BIGSERIAL PRIMARY KEY, topic TEXT NOT NULL, \
                 exactly_once BOOLEAN NOT NULL, ordered BOOLEAN NOT NULL, message_id TEXT NOT NULL, \
                 payload BYTEA NOT NULL, attributes TEXT NOT NULL, ordering_key TEXT, created_at BIGINT NOT NULL, \
                 deliver_at BIGINT)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {t}_topic_seq ON {t} (topic, seq)"),
            // A table from 0.1 lacks the due-time column; adding a nullable column rewrites nothing.
            format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS deliver_at BIGINT"),
        ];
        for sql in ddl {
            sqlx::query(&sql).execute(&self.pool).await.map_err(|e| db_error("migrate", e))?;
        }
        Ok(())
    }

    /// Writes `message` for `topic` into the outbox inside the caller's transaction; returns its message id. It is
    /// published once the transaction commits, and never if it rolls back.
    pub async fn publish<T: Serialize>(
        &self,
        tx: &mut PgConnection,
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
        tx: &mut PgConnection,
        topic: &Topic<T>,
        message: &T,
        options: PublishOptions,
    ) -> Result<MessageId> {
        let (r, id) = crate::prepare(&self.bus, topic, message, options)?;
        let t = &self.table;
        // One round trip: insert, and NOTIFY (delivered by PostgreSQL only when the transaction commits).
        let sql = format!(
            "WITH ins AS (INSERT INTO {t} (topic, exactly_once, ordered, message_id, payload, attributes, \
             ordering_key, created_at, deliver_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING seq) \
             SELECT pg_notify('{t}', '') FROM ins"
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
            .map_err(|e| crate::table_error(t, "writing to the outbox", e))?;
        Ok(id)
    }

    /// A relay for this outbox (poll fallback every second; NOTIFY wakes it sooner).
    pub fn relay(&self) -> Relay {
        let store = PgStore {
            pool: self.pool.clone(),
            table: self.table.to_string(),
            channel: self.table.to_string(),
            head: format!(
                "SELECT seq, topic FROM {t} WHERE seq IN (SELECT min(seq) FROM {t} WHERE NOT (topic = ANY($1)) \
                 GROUP BY topic) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                t = self.table
            ),
            claim: format!(
                "SELECT {COLUMNS} FROM {t} WHERE topic = $1 ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
                t = self.table
            ),
            delete: format!("DELETE FROM {t} WHERE seq = ANY($1)", t = self.table),
            pending: format!("SELECT count(*) AS n, min(created_at) AS oldest FROM {t}", t = self.table),
            lag: crate::relay::lag_histogram(&self.table),
            listener: Mutex::new(None),
        };
        Relay::new(Arc::new(store), self.bus.clone(), Duration::from_secs(1), self.table.clone())
    }
}

struct PgStore {
    pool: sqlx::PgPool,
    table: String,
    channel: String,
    head: String,
    claim: String,
    delete: String,
    pending: String,
    lag: metrics::Histogram,
    listener: Mutex<Option<PgListener>>,
}

impl PgStore {
    async fn relay_topic(
        &self,
        bus: &Bus,
        max: usize,
        paused: &[String],
    ) -> std::result::Result<usize, (String, tidings_core::Error)> {
        let err = |what: &str, e: sqlx::Error| (String::new(), db_error(what, e));
        let mut tx = self.pool.begin().await.map_err(|e| err("begin", e))?;
        let head = sqlx::query(&self.head)
            .bind(paused)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| err("claiming a topic", e))?;
        let Some(head) = head else {
            return Ok(0);
        };
        let topic: String = head.try_get("topic").map_err(|e| err("reading the topic", e))?;
        let rows = sqlx::query(&self.claim)
            .bind(&topic)
            .bind(max as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| (String::new(), crate::table_error(&self.table, "claiming rows", e)))?;
        let claimed = rows.iter().map(Claimed::from_row).collect::<Result<Vec<_>>>().map_err(|e| (topic.clone(), e))?;
        let seqs: Vec<i64> = claimed.iter().map(|c| c.seq).collect();
        row::publish(bus, &topic, claimed, &self.lag).await.map_err(|e| (topic.clone(), e))?;
        sqlx::query(&self.delete).bind(&seqs).execute(&mut *tx).await.map_err(|e| err("deleting relayed rows", e))?;
        tx.commit().await.map_err(|e| err("commit", e))?;
        Ok(seqs.len())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn relay_batch(
        &self,
        bus: &Bus,
        max: usize,
        paused: &[String],
    ) -> std::result::Result<usize, (String, tidings_core::Error)> {
        // Listen before looking, so a commit between an empty look and the wait is not missed.
        let mut l = self.listener.lock().await;
        if l.is_none() {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut listener) => match listener.listen(&self.channel).await {
                    Ok(()) => *l = Some(listener),
                    Err(e) => tracing::warn!(error = %e, "outbox relay: LISTEN failed; polling"),
                },
                Err(e) => tracing::warn!(error = %e, "outbox relay: no listener connection; polling"),
            }
        }
        drop(l);
        self.relay_topic(bus, max, paused).await
    }

    async fn wait(&self, timeout: Duration) {
        let mut guard = self.listener.lock().await;
        let Some(listener) = guard.as_mut() else {
            drop(guard);
            tokio::time::sleep(timeout).await;
            return;
        };
        match tokio::time::timeout(timeout, listener.recv()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "outbox relay: notification stream failed; reconnecting");
                *guard = None;
            }
        }
    }
    async fn pending(&self) -> Result<(u64, Option<i64>)> {
        let r = sqlx::query(&self.pending).fetch_one(&self.pool).await.map_err(|e| db_error("counting rows", e))?;
        let n: i64 = r.try_get("n").map_err(|e| db_error("counting rows", e))?;
        let oldest: Option<i64> = r.try_get("oldest").map_err(|e| db_error("counting rows", e))?;
        Ok((n as u64, oldest))
    }
}
