//! What the drivers ask of the database, one method per batch operation, implemented once for both dialects by
//! [`impl_store!`] (the statements differ, the calls do not).

use std::fmt::Debug;

use async_trait::async_trait;
use tidings_core::backend::{AckId, OutgoingMessage, ReceivedMessage};
use tidings_core::dead_letter::HeldLetter;
use tidings_core::{Attributes, DeadLetter, Result};

use crate::sql::Sql;

#[async_trait]
pub(crate) trait Store: Send + Sync + Debug {
    fn sql(&self) -> &Sql;
    /// The id of a subscription, registering it first when `create`.
    async fn register(&self, topic: &str, name: &str, create: bool) -> Result<i64>;
    /// Writes one delivery per subscription of `topic` for each message, in one transaction.
    async fn publish(&self, topic: &str, dedup: bool, batch: &[OutgoingMessage]) -> Result<()>;
    /// Leases up to `max` deliveries visible at `now` until `until` under the token `lease`, oldest first.
    async fn claim(
        &self,
        sub: i64,
        ordered: bool,
        max: usize,
        now: i64,
        until: i64,
        lease: i64,
    ) -> Result<Vec<ReceivedMessage>>;
    /// When the next pending delivery becomes visible (a past time when one is claimable now).
    async fn next_due(&self, sub: i64, ordered: bool) -> Result<Option<i64>>;
    /// Removes acked deliveries, or keeps them without payload until `keep_until` (exactly-once).
    async fn ack(&self, ids: &[(i64, i64)], keep_until: Option<i64>) -> Result<()>;
    /// Makes deliveries visible again at the given times.
    async fn nack(&self, items: &[(i64, i64, i64)]) -> Result<()>;
    async fn extend(&self, ids: &[(i64, i64)], until: i64) -> Result<()>;
    async fn dead_letter(&self, items: &[(i64, i64, String)], now: i64) -> Result<()>;
    /// The highest `seq` in the table (0 when empty).
    async fn high_water(&self) -> Result<i64>;
    /// Up to `max` dead rows with `after < seq <= upto`, in `seq` order, each under its `seq`.
    async fn dead_page(&self, sub: i64, after: i64, upto: i64, max: usize) -> Result<Vec<HeldLetter>>;
    /// Makes these dead rows pending again, in one transaction: each takes a new `seq` (behind what is pending, as a
    /// republish would) and counts its attempts from zero. Returns how many were still dead.
    async fn restore(&self, sub: i64, seqs: &[i64], now: i64) -> Result<u64>;
    /// Deletes these dead rows; returns how many were still dead.
    async fn delete_dead(&self, sub: i64, seqs: &[i64]) -> Result<u64>;
    /// Deletes the scheduled deliveries (published with a due time after `now`, never claimed) of message `id` on
    /// `topic`, in every subscription; returns how many.
    async fn cancel(&self, topic: &str, id: &str, now: i64) -> Result<u64>;
    /// Runs one of the `count(*)` statements for a subscription.
    async fn count(&self, statement: &str, sub: i64) -> Result<u64>;
    /// A subscription's pending rows and, of them, those still scheduled at `now` (µs), in one statement.
    async fn backlog_detail(&self, sub: i64, now: i64) -> Result<(u64, u64)>;
    /// Drops pending deliveries enqueued before `cutoff` (retention) and expired de-duplication rows.
    async fn sweep(&self, sub: i64, now: i64, cutoff: i64) -> Result<u64>;
    /// Tells other processes that `topic` changed (PostgreSQL NOTIFY; SQLite's watchers see every commit).
    async fn signal(&self, topic: &str) -> Result<()>;
}

/// Most deliveries per settle statement (ack, nack, lease extension, dead-letter: 2 or 3 placeholders each, far below
/// SQLite's 32,766 and PostgreSQL's 65,535): the backend's `max_settle_batch`, so each settle call of the driver is one
/// statement (core splits larger settlements).
pub(crate) const SETTLE_PER_STATEMENT: usize = 500;

/// Most messages per publish statement (6 placeholders each: 3,004 in all, far below SQLite's 32,766 and
/// PostgreSQL's 65,535); a larger batch takes several statements in its one transaction.
pub(crate) const MESSAGES_PER_STATEMENT: usize = 500;

/// Most `seq` values per statement (purging dead letters).
pub(crate) const SEQS_PER_STATEMENT: usize = 500;

/// A store on one pool of `$db`, with statements for its dialect; `channel` is PostgreSQL's NOTIFY channel.
pub(crate) struct SqlStore<DB: sqlx::Database> {
    pub pool: sqlx::Pool<DB>,
    pub sql: Sql,
    pub channel: Option<String>,
    /// SQLite: the file, to tell a publish waiting for this process's own write lock.
    pub own_lock: Option<crate::own_lock::OwnLock>,
}

impl<DB: sqlx::Database> Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").field("dialect", &self.sql.dialect).finish_non_exhaustive()
    }
}

/// Attributes are stored as JSON text, or an empty string for none (most messages). The trace context of the publish
/// is stored beside them under reserved keys (`tidings.trace.*`).
pub(crate) fn encode_attributes(
    a: &tidings_core::Attributes,
    trace: Option<&tidings_core::trace::TraceContext>,
) -> Result<String> {
    let a = tidings_core::trace::attributes_with_trace(a, trace);
    if a.is_empty() {
        Ok(String::new())
    } else {
        Ok(serde_json::to_string(&*a)?)
    }
}

/// The attributes and trace context [`encode_attributes`] stored.
pub(crate) fn decode_attributes(
    s: &str,
) -> Result<(tidings_core::Attributes, Option<tidings_core::trace::TraceContext>)> {
    if s.is_empty() {
        return Ok(Default::default());
    }
    let all = serde_json::from_str(s).map_err(|e| {
        tidings_core::Error::invalid(format!("sql: delivery row has invalid attributes JSON {s:?}: {e}"))
    })?;
    Ok(tidings_core::trace::split_trace(all))
}

/// The columns of a dead row, as read.
pub(crate) struct DeadRow {
    pub seq: i64,
    pub id: String,
    pub payload: Vec<u8>,
    pub attributes: String,
    pub ordering_key: Option<String>,
    pub publish_time: i64,
    pub attempts: i64,
    pub reason: Option<String>,
    pub dead_at: Option<i64>,
}

impl DeadRow {
    /// The dead letter, under its `seq`, with the trace context its publish stored beside the attributes.
    pub fn into_held(self) -> Result<HeldLetter> {
        let (attributes, trace): (Attributes, _) = decode_attributes(&self.attributes)?;
        let attempts = self.attempts.clamp(0, i64::from(u32::MAX)) as u32;
        let published = tidings_core::backend::time::from_micros(self.publish_time);
        let at = tidings_core::backend::time::from_micros(self.dead_at.unwrap_or(0));
        let letter = DeadLetter::new(
            self.id.into(),
            self.payload.into(),
            published,
            attempts,
            self.reason.unwrap_or_default(),
            at,
        )
        .with_attributes(attributes)
        .with_ordering_key(self.ordering_key);
        Ok(HeldLetter::new(AckId::Num(self.seq as u64), letter).with_trace(trace))
    }
}

/// Implements [`Store`] for `SqlStore<$db>` and `publish_on` for `$conn` (a transaction of the application's, or
/// one of the store's).
macro_rules! impl_store {
    ($db:ty, $conn:ty) => {
        /// Writes the deliveries of `batch` on `conn` (no commit).
        pub(crate) async fn publish_on(
            conn: &mut $conn,
            sql: &$crate::sql::Sql,
            channel: Option<&str>,
            topic: &str,
            dedup: bool,
            batch: &[tidings_core::backend::OutgoingMessage],
        ) -> tidings_core::Result<()> {
            let now = tidings_core::backend::time::micros(std::time::SystemTime::now());
            // One statement per chunk: a statement per message was most of a publish's cost (a round trip each).
            for chunk in batch.chunks($crate::store::MESSAGES_PER_STATEMENT) {
                let statement = sql.publish(chunk.len());
                let mut q = sqlx::query(&statement).bind(topic).bind(now).bind(dedup);
                if let Some(c) = channel {
                    q = q.bind(c);
                }
                for m in chunk {
                    q = q
                        .bind(m.id.as_str())
                        .bind(&m.payload[..])
                        .bind($crate::store::encode_attributes(&m.attributes, m.trace.as_ref())?)
                        .bind(m.ordering_key.as_deref())
                        .bind(tidings_core::backend::time::micros(m.publish_time))
                        // Published with a due time: invisible until then (delayed delivery is native here).
                        .bind(m.deliver_at.map_or(now, |at| tidings_core::backend::time::micros_ceil(at).max(now)));
                }
                q.execute(&mut *conn).await.map_err(|e| $crate::error::db_error("publishing", e))?;
            }
            Ok(())
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $crate::store::SqlStore<$db> {
            fn sql(&self) -> &$crate::sql::Sql {
                &self.sql
            }

            async fn register(&self, topic: &str, name: &str, create: bool) -> tidings_core::Result<i64> {
                use sqlx::Row;
                use $crate::error::db_error;
                if create {
                    let now = tidings_core::backend::time::micros(std::time::SystemTime::now());
                    return sqlx::query_scalar(&self.sql.register)
                        .bind(topic)
                        .bind(name)
                        .bind(now)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| db_error("registering the subscription", e));
                }
                let row = sqlx::query(&self.sql.lookup)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| db_error("looking up the subscription", e))?;
                let Some(row) = row else {
                    return Err(tidings_core::Error::config(format!(
                        "subscription {name:?} is not registered in {} (provisioning is not \"auto\"): run once \
                         with provisioning = \"auto\", or insert it",
                        self.sql.tables.subs
                    )));
                };
                let found: String = row.try_get("topic").map_err(|e| db_error("reading the subscription", e))?;
                if found != topic {
                    return Err(tidings_core::Error::config(format!(
                        "subscription {name:?} is registered on topic {found:?}, not {topic:?}"
                    )));
                }
                row.try_get("id").map_err(|e| db_error("reading the subscription", e))
            }

            async fn publish(
                &self,
                topic: &str,
                dedup: bool,
                batch: &[tidings_core::backend::OutgoingMessage],
            ) -> tidings_core::Result<()> {
                use $crate::error::db_error;
                let mut tx = match self.pool.begin_with(self.sql.begin).await {
                    Ok(tx) => tx,
                    Err(e) => {
                        let own = self.own_lock.as_ref().and_then(|o| o.explain(topic, &e));
                        return Err(match own {
                            Some(clear) => clear.with_source(e),
                            None => db_error("beginning a publish", e),
                        });
                    }
                };
                // SQLite's BEGIN IMMEDIATE took the write lock: this process holds it for the bus until the end.
                let _holds = self.own_lock.as_ref().map(|o| o.bus_write());
                publish_on(&mut tx, &self.sql, self.channel.as_deref(), topic, dedup, batch).await?;
                tx.commit().await.map_err(|e| db_error("committing a publish", e))
            }

            async fn claim(
                &self,
                sub: i64,
                ordered: bool,
                max: usize,
                now: i64,
                until: i64,
                lease: i64,
            ) -> tidings_core::Result<Vec<tidings_core::backend::ReceivedMessage>> {
                use sqlx::Row;
                use $crate::error::db_error;
                let sql = if ordered { &self.sql.claim_ordered } else { &self.sql.claim };
                let rows = sqlx::query(sql)
                    .bind(sub)
                    .bind(now)
                    .bind(until)
                    .bind(lease)
                    .bind(max as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| db_error("claiming deliveries", e))?;
                let get = |e| db_error("reading a claimed delivery", e);
                let mut out = Vec::with_capacity(rows.len());
                let mut seqs = Vec::with_capacity(rows.len());
                for r in rows {
                    let seq: i64 = r.try_get("seq").map_err(get)?;
                    let id: String = r.try_get("message_id").map_err(get)?;
                    let payload: Vec<u8> = r.try_get("payload").map_err(get)?;
                    let attributes: String = r.try_get("attributes").map_err(get)?;
                    let key: Option<String> = r.try_get("ordering_key").map_err(get)?;
                    let published: i64 = r.try_get("publish_time").map_err(get)?;
                    let attempts: i64 = r.try_get("attempts").map_err(get)?;
                    seqs.push(seq);
                    let (attributes, trace) = $crate::store::decode_attributes(&attributes)?;
                    let attempt = attempts.clamp(1, i64::from(u32::MAX)) as u32;
                    out.push(
                        tidings_core::backend::ReceivedMessage::new(
                            $crate::error::ack_id(seq, lease),
                            tidings_core::MessageId::from(id),
                            bytes::Bytes::from(payload),
                            tidings_core::backend::time::from_micros(published),
                            attempt,
                        )
                        .with_attributes(attributes)
                        .with_ordering_key(key.map(Into::into))
                        .with_trace(trace),
                    );
                }
                // RETURNING has no order: hand them out oldest first.
                let mut order: Vec<usize> = (0..out.len()).collect();
                order.sort_by_key(|&i| seqs[i]);
                let mut slots: Vec<Option<_>> = out.into_iter().map(Some).collect();
                Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
            }

            async fn next_due(&self, sub: i64, ordered: bool) -> tidings_core::Result<Option<i64>> {
                let sql = if ordered { &self.sql.next_due_ordered } else { &self.sql.next_due };
                sqlx::query_scalar::<_, Option<i64>>(sql)
                    .bind(sub)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("finding the next due delivery", e))
            }

            // Settle calls: one statement each (core sends at most SETTLE_PER_STATEMENT deliveries per call).

            async fn ack(&self, ids: &[(i64, i64)], keep_until: Option<i64>) -> tidings_core::Result<()> {
                if ids.is_empty() {
                    return Ok(());
                }
                let sql = match keep_until {
                    Some(_) => self.sql.ack_keep(ids.len()),
                    None => self.sql.ack_delete(ids.len()),
                };
                let mut q = sqlx::query(&sql);
                if let Some(until) = keep_until {
                    q = q.bind(Vec::<u8>::new()).bind(until);
                }
                for (seq, lease) in ids {
                    q = q.bind(*seq).bind(*lease);
                }
                q.execute(&self.pool).await.map_err(|e| $crate::error::db_error("acking", e))?;
                Ok(())
            }

            async fn nack(&self, items: &[(i64, i64, i64)]) -> tidings_core::Result<()> {
                if items.is_empty() {
                    return Ok(());
                }
                let sql = self.sql.nack(items.len());
                let mut q = sqlx::query(&sql);
                for (seq, lease, at) in items {
                    q = q.bind(*seq).bind(*lease).bind(*at);
                }
                q.execute(&self.pool).await.map_err(|e| $crate::error::db_error("nacking", e))?;
                Ok(())
            }

            async fn extend(&self, ids: &[(i64, i64)], until: i64) -> tidings_core::Result<()> {
                if ids.is_empty() {
                    return Ok(());
                }
                let sql = self.sql.extend(ids.len());
                let mut q = sqlx::query(&sql).bind(until);
                for (seq, lease) in ids {
                    q = q.bind(*seq).bind(*lease);
                }
                q.execute(&self.pool).await.map_err(|e| $crate::error::db_error("extending leases", e))?;
                Ok(())
            }

            async fn dead_letter(&self, items: &[(i64, i64, String)], now: i64) -> tidings_core::Result<()> {
                if items.is_empty() {
                    return Ok(());
                }
                let sql = self.sql.dead_letter(items.len());
                let mut q = sqlx::query(&sql).bind(now);
                for (seq, lease, reason) in items {
                    q = q.bind(*seq).bind(*lease).bind(reason.as_str());
                }
                q.execute(&self.pool).await.map_err(|e| $crate::error::db_error("dead-lettering", e))?;
                Ok(())
            }

            async fn cancel(&self, topic: &str, id: &str, now: i64) -> tidings_core::Result<u64> {
                let (s, d) = (&self.sql.tables.subs, &self.sql.tables.deliveries);
                let sql = format!(
                    "DELETE FROM {d} WHERE message_id = $1 AND state = {} AND attempts = 0 AND visible_at > \
                     enqueued_at AND visible_at > $2 AND sub IN (SELECT id FROM {s} WHERE topic = $3)",
                    $crate::schema::PENDING
                );
                let done = sqlx::query(&sql)
                    .bind(id)
                    .bind(now)
                    .bind(topic)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("cancelling a scheduled message", e))?;
                Ok(done.rows_affected())
            }

            async fn high_water(&self) -> tidings_core::Result<i64> {
                let sql = format!("SELECT max(seq) FROM {}", self.sql.tables.deliveries);
                let max: Option<i64> = sqlx::query_scalar(&sql)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("reading the highest seq", e))?;
                Ok(max.unwrap_or(0))
            }

            async fn dead_page(
                &self,
                sub: i64,
                after: i64,
                upto: i64,
                max: usize,
            ) -> tidings_core::Result<Vec<tidings_core::dead_letter::HeldLetter>> {
                use sqlx::Row;
                use $crate::error::db_error;
                let rows = sqlx::query(&self.sql.dead_page)
                    .bind(sub)
                    .bind(after)
                    .bind(upto)
                    .bind(max.min(i64::MAX as usize) as i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| db_error("reading dead letters", e))?;
                let get = |e| db_error("reading a dead letter", e);
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let row = $crate::store::DeadRow {
                        seq: r.try_get("seq").map_err(get)?,
                        id: r.try_get("message_id").map_err(get)?,
                        payload: r.try_get("payload").map_err(get)?,
                        attributes: r.try_get("attributes").map_err(get)?,
                        ordering_key: r.try_get("ordering_key").map_err(get)?,
                        publish_time: r.try_get("publish_time").map_err(get)?,
                        attempts: r.try_get("attempts").map_err(get)?,
                        reason: r.try_get("reason").map_err(get)?,
                        dead_at: r.try_get("dead_at").map_err(get)?,
                    };
                    out.push(row.into_held()?);
                }
                Ok(out)
            }

            async fn restore(&self, sub: i64, seqs: &[i64], now: i64) -> tidings_core::Result<u64> {
                use $crate::error::db_error;
                let mut tx =
                    self.pool.begin_with(self.sql.begin).await.map_err(|e| db_error("beginning a redrive", e))?;
                let _holds = self.own_lock.as_ref().map(|o| o.bus_write());
                let mut moved = 0;
                for &seq in seqs {
                    let done = sqlx::query(&self.sql.renumber)
                        .bind(seq)
                        .bind(now)
                        .bind(sub)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| db_error("redriving", e))?;
                    moved += done.rows_affected();
                }
                tx.commit().await.map_err(|e| db_error("committing a redrive", e))?;
                Ok(moved)
            }

            async fn delete_dead(&self, sub: i64, seqs: &[i64]) -> tidings_core::Result<u64> {
                let mut gone = 0;
                for chunk in seqs.chunks($crate::store::SEQS_PER_STATEMENT) {
                    let sql = self.sql.delete_dead(chunk.len());
                    let mut q = sqlx::query(&sql).bind(sub);
                    for seq in chunk {
                        q = q.bind(*seq);
                    }
                    let done =
                        q.execute(&self.pool).await.map_err(|e| $crate::error::db_error("purging dead letters", e))?;
                    gone += done.rows_affected();
                }
                Ok(gone)
            }

            async fn count(&self, statement: &str, sub: i64) -> tidings_core::Result<u64> {
                let n: i64 = sqlx::query_scalar(statement)
                    .bind(sub)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("counting deliveries", e))?;
                Ok(n.max(0) as u64)
            }

            async fn backlog_detail(&self, sub: i64, now: i64) -> tidings_core::Result<(u64, u64)> {
                let (total, scheduled): (i64, i64) = sqlx::query_as(&self.sql.backlog_detail)
                    .bind(sub)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("counting deliveries", e))?;
                Ok((total.max(0) as u64, scheduled.max(0) as u64))
            }

            async fn sweep(&self, sub: i64, now: i64, cutoff: i64) -> tidings_core::Result<u64> {
                let done = sqlx::query(&self.sql.sweep)
                    .bind(sub)
                    .bind(now)
                    .bind(cutoff)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("expiring deliveries", e))?;
                Ok(done.rows_affected())
            }

            async fn signal(&self, topic: &str) -> tidings_core::Result<()> {
                let Some(channel) = &self.channel else { return Ok(()) };
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(channel)
                    .bind(topic)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("notifying", e))?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_store;
