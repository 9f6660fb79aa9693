//! The operator SPI on the SQL tables: topics and subscriptions from the `subscriptions` table, exact figures from
//! the `deliveries` rows (backlog, in flight, oldest unacked, dead letters), and a subscription's dead letters as
//! its [`SqlDeadLetters`] queue, which core's sweep reads, redrives and purges.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tidings_core::admin::{Admin, Check, SubscriptionResource, SubscriptionStats, TopicResource, Unknown};
use tidings_core::backend::time::micros;
use tidings_core::backend::SubscriptionSpec;
use tidings_core::dead_letter::DeadLetters;
use tidings_core::{Error, ErrorKind, Result};

use crate::dead_letters::SqlDeadLetters;
use crate::sql::Dialect;
use crate::store::Store;
use crate::wake::Wake;

/// A subscription's rows counted in one statement.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub pending: i64,
    pub in_flight: i64,
    /// `enqueued_at` (µs) of the oldest pending row.
    pub oldest: Option<i64>,
    pub dead: i64,
}

/// What the operator asks of the tables beyond what subscriptions do (the [`Store`]); implemented below for both
/// dialects by [`impl_admin_store!`].
#[async_trait]
pub(crate) trait AdminStore: Send + Sync + Debug {
    /// Every registered subscription: (topic, name).
    async fn registered(&self) -> Result<Vec<(String, String)>>;
    /// The id and topic of a registered subscription.
    async fn find(&self, name: &str) -> Result<Option<(i64, String)>>;
    /// Pending, leased and dead rows of a subscription at `now` (µs).
    async fn counts(&self, sub: i64, now: i64) -> Result<Counts>;
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

/// Operator access to the SQL tables.
#[derive(Debug)]
pub(crate) struct SqlAdmin {
    pub store: Arc<dyn Store>,
    pub admin_store: Arc<dyn AdminStore>,
    pub wake: Arc<Wake>,
}

fn now_us() -> i64 {
    micros(SystemTime::now())
}

impl SqlAdmin {
    /// The subscription's id; NotFound when it is not registered (or registered on another topic).
    async fn id(&self, spec: &SubscriptionSpec) -> Result<i64> {
        match self.admin_store.find(&spec.resource).await? {
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

    /// The subscription's dead-letter queue.
    async fn queue(&self, spec: &SubscriptionSpec) -> Result<SqlDeadLetters> {
        let sub = self.id(spec).await?;
        let (store, wake, topic) = (self.store.clone(), self.wake.clone(), spec.topic.resource.clone());
        Ok(SqlDeadLetters { store, wake, topic, sub })
    }
}

#[async_trait]
impl Admin for SqlAdmin {
    async fn list(&self, prefix: &str) -> Result<Vec<TopicResource>> {
        let mut out: Vec<TopicResource> = Vec::new();
        for (topic, name) in self.admin_store.registered().await? {
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
        let c = self.admin_store.counts(sub, now).await?;
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

    async fn dead_letter_queue(&self, spec: &SubscriptionSpec) -> Result<Option<Arc<dyn DeadLetters>>> {
        Ok(Some(Arc::new(self.queue(spec).await?)))
    }

    async fn delete_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        let sub = self.id(spec).await?;
        self.admin_store.delete_subscription(sub).await
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
        match self.admin_store.privileges().await {
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
