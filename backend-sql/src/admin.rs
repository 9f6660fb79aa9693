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
    /// Pending rows still scheduled (published with a due time not reached, never claimed).
    pub scheduled: i64,
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
    /// PostgreSQL: the current user (quoted as an identifier) and, for every privilege in [`NEEDED`], whether it
    /// holds it.
    async fn privileges(&self) -> Result<(String, Vec<Privilege>)>;
}

/// What tidings does on the subscriptions and deliveries tables.
const READ_WRITE: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE"];

/// The kinds of object a PostgreSQL privilege is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Object {
    Schema,
    /// A table of the schema (`subscriptions`, `deliveries`, `schema_version`).
    Table(&'static str),
    /// The sequence numbering a column of a table (`BIGSERIAL`): (table, column).
    Sequence(&'static str, &'static str),
}

/// The PostgreSQL privileges tidings needs once the schema exists (creating it is `provisioning = "auto"`'s first
/// start, as a role that may; see the book's sql.md, "Permissions"): USAGE on the schema, SELECT on `schema_version`
/// (read once at start), SELECT, INSERT, UPDATE and DELETE on `subscriptions` and `deliveries`, and USAGE on the two
/// sequences their inserts (and the renumbering of a redrive) draw from.
pub(crate) const NEEDED: &[(Object, &[&str])] = &[
    (Object::Schema, &["USAGE"]),
    (Object::Table("subscriptions"), READ_WRITE),
    (Object::Table("deliveries"), READ_WRITE),
    (Object::Table("schema_version"), &["SELECT"]),
    (Object::Sequence("subscriptions", "id"), &["USAGE"]),
    (Object::Sequence("deliveries", "seq"), &["USAGE"]),
];

/// One privilege of [`NEEDED`] as found.
#[derive(Debug, Clone)]
pub(crate) struct Privilege {
    /// `SCHEMA`, `TABLE` or `SEQUENCE`, as GRANT names it.
    pub kind: &'static str,
    /// The object's qualified name (a sequence not found: a description of it).
    pub object: String,
    pub privilege: &'static str,
    /// Whether the current user holds it; `None` when the object does not exist.
    pub held: Option<bool>,
}

/// The doctor's checks from [`AdminStore::privileges`]: one per object, failing with the privileges the role lacks
/// and the GRANT that gives them.
fn privilege_checks(role: &str, found: &[Privilege]) -> Vec<Check> {
    let mut out = Vec::new();
    let mut rest = found;
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|p| p.kind == first.kind && p.object == first.object).count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let (kind, object) = (first.kind, &first.object);
        let name = format!("permissions: {} {object}", kind.to_lowercase());
        if group.iter().any(|p| p.held.is_none()) {
            out.push(Check::fail(name, format!("{} {object} does not exist", kind.to_lowercase())));
            continue;
        }
        let names = |held: bool| -> Vec<&str> {
            group.iter().filter(|p| p.held == Some(held)).map(|p| p.privilege).collect::<Vec<_>>()
        };
        let (held, lacking) = (names(true), names(false));
        if lacking.is_empty() {
            out.push(Check::pass(name, format!("{role} holds {} on it", held.join(", "))));
        } else {
            let lacking = lacking.join(", ");
            out.push(Check::fail(
                name,
                format!("{role} lacks {lacking} on {object}: GRANT {lacking} ON {kind} {object} TO {role}"),
            ));
        }
    }
    out
}

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
                    "SELECT count(*) FILTER (WHERE d.state = {PENDING}), count(*) FILTER (WHERE d.state = {PENDING} \
                     AND {} AND d.visible_at > $2), count(*) FILTER (WHERE d.state = {PENDING} AND d.lease IS NOT NULL \
                     AND d.visible_at > $2), min(d.enqueued_at) FILTER (WHERE d.state = {PENDING}), count(*) FILTER \
                     (WHERE d.state = {DEAD}) FROM {} d WHERE d.sub = $1 AND d.state IN ({PENDING}, {DEAD})",
                    $crate::sql::scheduled("d"),
                    self.sql.tables.deliveries
                );
                let (pending, scheduled, in_flight, oldest, dead): (i64, i64, i64, Option<i64>, i64) =
                    sqlx::query_as(&sql)
                    .bind(sub)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| $crate::error::db_error("counting deliveries", e))?;
                Ok($crate::admin::Counts { pending, scheduled, in_flight, oldest, dead })
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

            async fn privileges(
                &self,
            ) -> tidings_core::Result<(String, Vec<$crate::admin::Privilege>)> {
                use $crate::admin::{Object, Privilege, NEEDED};
                // By oid from the catalogs (readable by every role), so that a missing USAGE on the schema does not
                // keep the tables' and sequences' privileges from being read.
                const SCHEMA: &str = "SELECT has_schema_privilege(oid, $2) FROM pg_namespace WHERE nspname = $1";
                const TABLE: &str = "SELECT has_table_privilege(c.oid, $3) FROM pg_class c JOIN pg_namespace n ON \
                                     n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2";
                // The sequence a serial or identity column owns (what pg_get_serial_sequence finds).
                const SEQUENCE: &str = "SELECT s.relname::text, has_sequence_privilege(s.oid, $4) FROM pg_class t \
                     JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_attribute a ON a.attrelid = t.oid AND \
                     a.attname = $3 JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid \
                     AND d.refobjsubid = a.attnum AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') \
                     JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' WHERE n.nspname = $1 AND t.relname = $2";
                let err = |e| $crate::error::db_error("reading privileges", e);
                let schema = self.sql.tables.subs.split_once('.').map_or("", |(s, _)| s).to_string();
                let role: String =
                    sqlx::query_scalar("SELECT quote_ident(current_user)").fetch_one(&self.pool).await.map_err(err)?;
                let mut out = Vec::new();
                for (object, privileges) in NEEDED {
                    for &privilege in *privileges {
                        let (kind, name, held) = match *object {
                            Object::Schema => {
                                let held: Option<bool> = sqlx::query_scalar(SCHEMA)
                                    .bind(&schema)
                                    .bind(privilege)
                                    .fetch_optional(&self.pool)
                                    .await
                                    .map_err(err)?;
                                ("SCHEMA", schema.clone(), held)
                            }
                            Object::Table(table) => {
                                let held: Option<bool> = sqlx::query_scalar(TABLE)
                                    .bind(&schema)
                                    .bind(table)
                                    .bind(privilege)
                                    .fetch_optional(&self.pool)
                                    .await
                                    .map_err(err)?;
                                ("TABLE", format!("{schema}.{table}"), held)
                            }
                            Object::Sequence(table, column) => {
                                let found: Option<(String, bool)> = sqlx::query_as(SEQUENCE)
                                    .bind(&schema)
                                    .bind(table)
                                    .bind(column)
                                    .bind(privilege)
                                    .fetch_optional(&self.pool)
                                    .await
                                    .map_err(err)?;
                                match found {
                                    Some((seq, held)) => ("SEQUENCE", format!("{schema}.{seq}"), Some(held)),
                                    None => ("SEQUENCE", format!("of {schema}.{table}.{column}"), None),
                                }
                            }
                        };
                        out.push(Privilege { kind, object: name, privilege, held });
                    }
                }
                Ok((role, out))
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
            scheduled: n(c.scheduled),
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
            Err(e) => vec![Check::fail("permissions", format!("cannot read the privileges: {e}"))],
            Ok((role, found)) => privilege_checks(&role, &found),
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
