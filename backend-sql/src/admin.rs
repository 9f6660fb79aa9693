//! The operator SPI on the SQL tables: topics and subscriptions from the `subscriptions` table, exact figures from
//! the `deliveries` rows (backlog, in flight, oldest unacked, dead letters), and dead letters acted on one row at a
//! time, each in one statement: a redrive turns the dead row back into a pending one (a new `seq` puts it behind
//! what is pending, as a republish would), a purge deletes it. A single statement either happens or does not, so an
//! interrupted redrive leaves every message in the dead-letter state or pending again, never neither and never both.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tidings_core::admin::{
    Admin, Check, Pace, Select, SubscriptionResource, SubscriptionStats, TopicResource, Unknown,
};
use tidings_core::backend::SubscriptionSpec;
use tidings_core::time::micros;
use tidings_core::{DeadLetter, Error, ErrorKind, Result};

use crate::sql::Dialect;
use crate::store::Store;
use crate::wake::Wake;

/// Dead rows read per statement while sweeping.
const PAGE: usize = 500;

/// A subscription's rows counted in one statement.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub pending: i64,
    pub in_flight: i64,
    /// `enqueued_at` (µs) of the oldest pending row.
    pub oldest: Option<i64>,
    pub dead: i64,
}

/// What the operator asks of the tables beyond what subscriptions do ([`Store`] requires it, so both dialects have
/// it; implemented below by [`impl_admin_store!`]).
#[async_trait]
pub(crate) trait AdminStore: Send + Sync {
    /// Every registered subscription: (topic, name).
    async fn registered(&self) -> Result<Vec<(String, String)>>;
    /// The id and topic of a registered subscription.
    async fn find(&self, name: &str) -> Result<Option<(i64, String)>>;
    /// Pending, leased and dead rows of a subscription at `now` (µs).
    async fn counts(&self, sub: i64, now: i64) -> Result<Counts>;
    /// The highest `seq` in the table (0 when empty).
    async fn high_water(&self) -> Result<i64>;
    /// Up to `max` dead rows with `after < seq <= upto`, in `seq` order.
    async fn dead_page(&self, sub: i64, after: i64, upto: i64, max: usize) -> Result<Vec<(i64, DeadLetter)>>;
    /// Makes one dead row pending again; false when it was no longer dead.
    async fn revive(&self, seq: i64, now: i64) -> Result<bool>;
    /// Deletes one dead row; false when it was no longer dead.
    async fn delete_dead(&self, seq: i64) -> Result<bool>;
    /// Deletes a subscription and all its rows, in one transaction.
    async fn delete_subscription(&self, sub: i64) -> Result<()>;
    /// PostgreSQL: (table, privilege, held by the current user) for what tidings does on its tables.
    async fn privileges(&self) -> Result<Vec<(String, &'static str, bool)>>;
}

/// What tidings does on its tables (PostgreSQL privileges).
pub(crate) const PRIVILEGES: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];

/// Implements [`AdminStore`] for `SqlStore<$db>`.
macro_rules! impl_admin_store {
    ($db:ty) => {
        #[async_trait::async_trait]
        impl $crate::admin::AdminStore for $crate::store::SqlStore<$db> {
            async fn registered(&self) -> tidings_core::Result<Vec<(String, String)>> {
                let sql = format!("SELECT topic, name FROM {} ORDER BY topic, name", self.sql.tables.subs);
                sqlx::query_as(&sql)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("listing subscriptions", e))
            }

            async fn find(&self, name: &str) -> tidings_core::Result<Option<(i64, String)>> {
                sqlx::query_as(&self.sql.lookup)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("looking up the subscription", e))
            }

            async fn counts(&self, sub: i64, now: i64) -> tidings_core::Result<$crate::admin::Counts> {
                use $crate::schema::{DEAD, PENDING};
                let sql = format!(
                    "SELECT count(*) FILTER (WHERE state = {PENDING}), count(*) FILTER (WHERE state = {PENDING} AND \
                     lease IS NOT NULL AND visible_at > $2), min(enqueued_at) FILTER (WHERE state = {PENDING}), \
                     count(*) FILTER (WHERE state = {DEAD}) FROM {} WHERE sub = $1 AND state IN ({PENDING}, {DEAD})",
                    self.sql.tables.deliveries
                );
                let (pending, in_flight, oldest, dead): (i64, i64, Option<i64>, i64) = sqlx::query_as(&sql)
                    .bind(sub)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("counting deliveries", e))?;
                Ok($crate::admin::Counts { pending, in_flight, oldest, dead })
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
            ) -> tidings_core::Result<Vec<(i64, tidings_core::DeadLetter)>> {
                use sqlx::Row;
                use $crate::error::db_error;
                let sql = format!(
                    "SELECT seq, message_id, payload, attributes, ordering_key, publish_time, attempts, reason, \
                     dead_at FROM {} WHERE sub = $1 AND state = {} AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
                    self.sql.tables.deliveries,
                    $crate::schema::DEAD
                );
                let rows = sqlx::query(&sql)
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
                    let attributes: String = r.try_get("attributes").map_err(get)?;
                    let row = $crate::admin::DeadRow {
                        id: r.try_get("message_id").map_err(get)?,
                        payload: r.try_get("payload").map_err(get)?,
                        attributes: $crate::store::decode_attributes(&attributes)?.0,
                        ordering_key: r.try_get("ordering_key").map_err(get)?,
                        publish_time: r.try_get("publish_time").map_err(get)?,
                        attempts: r.try_get("attempts").map_err(get)?,
                        reason: r.try_get("reason").map_err(get)?,
                        dead_at: r.try_get("dead_at").map_err(get)?,
                    };
                    out.push((r.try_get("seq").map_err(get)?, row.into()));
                }
                Ok(out)
            }

            async fn revive(&self, seq: i64, now: i64) -> tidings_core::Result<bool> {
                let done = sqlx::query(&self.sql.renumber)
                    .bind(seq)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("redriving", e))?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_dead(&self, seq: i64) -> tidings_core::Result<bool> {
                let sql =
                    format!("DELETE FROM {} WHERE seq = $1 AND state = {}", self.sql.tables.deliveries, $crate::schema::DEAD);
                let done = sqlx::query(&sql)
                    .bind(seq)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("purging a dead letter", e))?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_subscription(&self, sub: i64) -> tidings_core::Result<()> {
                use $crate::error::db_error;
                let t = &self.sql.tables;
                let mut tx = self
                    .pool
                    .begin_with(self.sql.begin)
                    .await
                    .map_err(|e| db_error("beginning to delete a subscription", e))?;
                for sql in [format!("DELETE FROM {} WHERE sub = $1", t.deliveries), format!("DELETE FROM {} WHERE id = $1", t.subs)]
                {
                    sqlx::query(&sql)
                        .bind(sub)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| db_error("deleting a subscription", e))?;
                }
                tx.commit().await.map_err(|e| db_error("committing the deletion of a subscription", e))
            }

            async fn privileges(&self) -> tidings_core::Result<Vec<(String, &'static str, bool)>> {
                let t = &self.sql.tables;
                let mut out = Vec::new();
                for table in [&t.subs, &t.deliveries, &t.version] {
                    for p in $crate::admin::PRIVILEGES {
                        let held: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2)")
                            .bind(table.as_str())
                            .bind(p)
                            .fetch_one(&self.pool)
                            .await
                            .map_err(|e| $crate::error::db_error("reading table privileges", e))?;
                        out.push((table.clone(), p, held));
                    }
                }
                Ok(out)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
impl_admin_store!(sqlx::Sqlite);
#[cfg(feature = "postgres")]
impl_admin_store!(sqlx::Postgres);

/// The columns of a dead row, as read.
pub(crate) struct DeadRow {
    pub id: String,
    pub payload: Vec<u8>,
    pub attributes: tidings_core::Attributes,
    pub ordering_key: Option<String>,
    pub publish_time: i64,
    pub attempts: i64,
    pub reason: Option<String>,
    pub dead_at: Option<i64>,
}

impl From<DeadRow> for DeadLetter {
    fn from(r: DeadRow) -> Self {
        let attempts = r.attempts.clamp(0, i64::from(u32::MAX)) as u32;
        let published = tidings_core::time::from_micros(r.publish_time);
        let at = tidings_core::time::from_micros(r.dead_at.unwrap_or(0));
        DeadLetter::new(r.id.into(), r.payload.into(), published, attempts, r.reason.unwrap_or_default(), at)
            .with_attributes(r.attributes)
            .with_ordering_key(r.ordering_key)
    }
}

/// Operator access to the SQL tables.
#[derive(Debug)]
pub(crate) struct SqlAdmin {
    pub store: Arc<dyn Store>,
    pub wake: Arc<Wake>,
}

fn now_us() -> i64 {
    micros(SystemTime::now())
}

impl SqlAdmin {
    /// The subscription's id; NotFound when it is not registered (or registered on another topic).
    async fn id(&self, spec: &SubscriptionSpec) -> Result<i64> {
        match self.store.find(&spec.resource).await? {
            Some((id, topic)) if topic == spec.topic.resource => Ok(id),
            Some((_, topic)) => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "sql: subscription {:?} is registered on topic {topic:?}, not {:?}",
                    spec.resource, spec.topic.resource
                ),
            )),
            None => Err(Error::new(
                ErrorKind::NotFound,
                format!("sql: subscription {:?} is not registered in {}", spec.resource, self.store.sql().tables.subs),
            )),
        }
    }

    /// Walks the dead rows present when it starts (a row redriven and dead-lettered again meanwhile has a higher
    /// `seq` and is not met twice), acting on each selected one as `pace` allows.
    async fn sweep(&self, spec: &SubscriptionSpec, select: Select<'_>, pace: &Pace, redrive: bool) -> Result<u64> {
        let sub = self.id(spec).await?;
        let upto = self.store.high_water().await?;
        let (mut after, mut done) = (0, 0);
        'pages: loop {
            let page = self.store.dead_page(sub, after, upto, PAGE).await?;
            let Some(&(last, _)) = page.last() else { break };
            after = last;
            for (seq, d) in page {
                if !select(&d) {
                    continue;
                }
                if !pace.wait().await {
                    break 'pages;
                }
                let acted =
                    if redrive { self.store.revive(seq, now_us()).await? } else { self.store.delete_dead(seq).await? };
                if acted {
                    pace.done();
                    done += 1;
                    if redrive {
                        self.wake.notify(&spec.topic.resource);
                        self.store.signal(&spec.topic.resource).await?;
                    }
                }
            }
        }
        Ok(done)
    }
}

#[async_trait]
impl Admin for SqlAdmin {
    async fn list(&self, prefix: &str) -> Result<Vec<TopicResource>> {
        let mut out: Vec<TopicResource> = Vec::new();
        for (topic, name) in self.store.registered().await? {
            if !topic.starts_with(prefix) {
                continue;
            }
            let sub = SubscriptionResource { resource: name, dead_letter_resource: None };
            match out.last_mut() {
                Some(t) if t.resource == topic => t.subscriptions.push(sub),
                _ => out.push(TopicResource { resource: topic, config: None, subscriptions: vec![sub] }),
            }
        }
        Ok(out)
    }

    async fn stats(&self, spec: &SubscriptionSpec) -> Result<SubscriptionStats> {
        let sub = self.id(spec).await?;
        let now = now_us();
        let c = self.store.counts(sub, now).await?;
        let n = |v: i64| Some(v.max(0) as u64);
        Ok(SubscriptionStats {
            backlog: n(c.pending),
            in_flight: n(c.in_flight),
            // Nothing pending: known, and no age.
            oldest_unacked: Some(
                c.oldest.map_or(Duration::ZERO, |t| Duration::from_micros(now.saturating_sub(t).max(0) as u64)),
            ),
            dead_letters: n(c.dead),
        })
    }

    async fn dead_letters(&self, spec: &SubscriptionSpec, max: usize) -> Result<Vec<DeadLetter>> {
        let sub = self.id(spec).await?;
        let page = self.store.dead_page(sub, 0, i64::MAX, max).await?;
        Ok(page.into_iter().map(|(_, d)| d).collect())
    }

    async fn redrive(&self, spec: &SubscriptionSpec, select: Select<'_>, pace: &Pace) -> Result<u64> {
        self.sweep(spec, select, pace, true).await
    }

    async fn purge(&self, spec: &SubscriptionSpec, select: Select<'_>, pace: &Pace) -> Result<u64> {
        self.sweep(spec, select, pace, false).await
    }

    async fn delete_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        let sub = self.id(spec).await?;
        AdminStore::delete_subscription(&*self.store, sub).await
    }

    async fn provisioned(&self, spec: &SubscriptionSpec) -> Result<()> {
        self.id(spec).await.map(drop)
    }

    async fn permissions(&self, _topology: &tidings_core::topology::Topology) -> Vec<Check> {
        if self.store.sql().dialect == Dialect::Sqlite {
            return vec![Check::skipped(
                "permissions",
                "SQLite has no users or grants: a process that can write the database file (and its directory, for \
                 the WAL) can do everything tidings does",
            )];
        }
        match self.store.privileges().await {
            Err(e) => vec![Check::fail("permissions", format!("cannot read table privileges: {e}"))],
            Ok(rows) => {
                let missing: Vec<String> =
                    rows.iter().filter(|(_, _, held)| !held).map(|(t, p, _)| format!("{p} on {t}")).collect();
                let tables = self.store.sql().tables.clone();
                let name = format!("permissions: {}, {}, {}", tables.subs, tables.deliveries, tables.version);
                if missing.is_empty() {
                    vec![Check::pass(name, "the current user holds SELECT, INSERT, UPDATE and DELETE on every table")]
                } else {
                    vec![Check::fail(name, format!("the current user lacks {} (GRANT them)", missing.join(", ")))]
                }
            }
        }
    }

    fn unknown(&self) -> Vec<Unknown> {
        vec![
            (
                "delivery",
                "the SQL tables keep no topic settings (delivery and ordering are the publishing and subscribing code's)",
            ),
            ("rates", "the SQL tables keep no history of publishes and acks, only the rows still there"),
        ]
    }
}
