//! Publishing inside the application's own transaction: the delivery rows are written on the application's
//! connection, so they commit or roll back with its own rows, with no outbox relay. On PostgreSQL the NOTIFY is part
//! of the transaction too (delivered at commit); on SQLite the watchers see the commit.

use async_trait::async_trait;
use serde::Serialize;
use tidings_core::backend::OutgoingMessage;
use tidings_core::{Bus, Error, MessageId, PublishOptions, Result, Topic};

#[allow(unused_imports)]
use crate::schema::Tables;
#[allow(unused_imports)]
use crate::sql::{Dialect, Sql};

/// A connection (inside a transaction: `&mut *tx`) that tidings can publish on: `SqliteConnection`, `PgConnection`.
#[async_trait]
pub trait InTransaction: Send {
    /// The backend name a bus must have for this connection's database (`sqlite`, `postgres`).
    fn backend_name(&self) -> &'static str;
    #[doc(hidden)]
    async fn write_deliveries(&mut self, bus: &Bus, topic: &str, dedup: bool, batch: &[OutgoingMessage]) -> Result<()>;
    /// Settles held delivery rows on this connection ([`crate::ack_in`]).
    #[doc(hidden)]
    async fn settle_rows(
        &mut self,
        _bus: &Bus,
        _subscription: &str,
        _id: &str,
        _seqs: &[i64],
        _keep_until: Option<i64>,
    ) -> Result<u64> {
        Ok(0)
    }
    /// Whether this connection's database holds the bus's tables with the grants [`crate::ack_in`] needs.
    #[doc(hidden)]
    async fn has_bus_tables(&mut self, _bus: &Bus) -> Result<bool> {
        Ok(false)
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl InTransaction for sqlx::SqliteConnection {
    fn backend_name(&self) -> &'static str {
        "sqlite"
    }

    async fn write_deliveries(
        &mut self,
        _bus: &Bus,
        topic: &str,
        dedup: bool,
        batch: &[OutgoingMessage],
    ) -> Result<()> {
        let sql = Sql::new(Dialect::Sqlite, Tables::sqlite());
        crate::sqlite::publish_on(self, &sql, None, topic, dedup, batch).await
    }

    async fn settle_rows(
        &mut self,
        _bus: &Bus,
        subscription: &str,
        id: &str,
        seqs: &[i64],
        keep_until: Option<i64>,
    ) -> Result<u64> {
        let sql = Sql::new(Dialect::Sqlite, Tables::sqlite());
        crate::settle_in::settle_on!(&mut *self, &sql, subscription, id, seqs, keep_until)
    }

    async fn has_bus_tables(&mut self, _bus: &Bus) -> Result<bool> {
        let t = Tables::sqlite();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ($1, $2)")
            .bind(&t.deliveries)
            .bind(&t.subs)
            .fetch_one(&mut *self)
            .await
            .map_err(|e| crate::error::db_error("looking for the bus's tables", e))?;
        Ok(n == 2)
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl InTransaction for sqlx::PgConnection {
    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    async fn write_deliveries(&mut self, bus: &Bus, topic: &str, dedup: bool, batch: &[OutgoingMessage]) -> Result<()> {
        let schema = pg_schema(bus)?;
        let sql = Sql::new(Dialect::Postgres, Tables::postgres(&schema));
        let channel = crate::postgres::channel(&schema);
        crate::postgres::publish_on(self, &sql, Some(&channel), topic, dedup, batch).await
    }

    async fn settle_rows(
        &mut self,
        bus: &Bus,
        subscription: &str,
        id: &str,
        seqs: &[i64],
        keep_until: Option<i64>,
    ) -> Result<u64> {
        let sql = Sql::new(Dialect::Postgres, Tables::postgres(&pg_schema(bus)?));
        crate::settle_in::settle_on!(&mut *self, &sql, subscription, id, seqs, keep_until)
    }

    async fn has_bus_tables(&mut self, bus: &Bus) -> Result<bool> {
        let t = Tables::postgres(&pg_schema(bus)?);
        // CASE: the privilege functions fail on a table that does not exist.
        sqlx::query_scalar(
            "SELECT CASE WHEN to_regclass($1) IS NULL OR to_regclass($2) IS NULL THEN false ELSE \
             has_table_privilege($1, 'DELETE') AND has_table_privilege($1, 'UPDATE') AND \
             has_table_privilege($2, 'SELECT') END",
        )
        .bind(&t.deliveries)
        .bind(&t.subs)
        .fetch_one(&mut *self)
        .await
        .map_err(|e| crate::error::db_error("looking for the bus's tables", e))
    }
}

/// The bus's schema (`postgres.schema` of its settings), checked.
#[cfg(feature = "postgres")]
fn pg_schema(bus: &Bus) -> Result<String> {
    let schema = bus.settings().section::<crate::PostgresConfig>("postgres")?.schema;
    crate::config::validate_schema(&schema)?;
    Ok(schema)
}

/// Publishes `message` to `topic` inside the transaction `tx` is in (pass `&mut *tx`): it reaches every
/// subscription registered when the row is written once the transaction commits, and never if it rolls back.
/// `bus` must be on the same database (`sqlite` or `postgres` backend; on PostgreSQL the schema is read from the
/// bus's settings, `postgres.schema`). Returns the message id.
///
/// Inside the transaction, publish with this function, not through the bus. On SQLite a transaction that has written
/// holds the file's one write lock, so a `topic.publish(&bus, ..)` from the same process waits for that lock while
/// the transaction waits for the publish (and every other process's writes wait as well). The bus notices (on Linux,
/// where `/proc/locks` names the process holding the lock) once `sqlite.busy_timeout` has passed, and fails that
/// publish, not retried, with [`ErrorKind::Unsupported`](tidings_core::ErrorKind::Unsupported) and an error naming
/// `tidings::sql::publish_in`; elsewhere it fails with SQLite's "database is locked" after its retries. On
/// PostgreSQL a publish through the bus during the transaction is not blocked, but it commits on its own, whatever
/// the transaction does.
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # use tidings_core::{Topic, TopicConfig};
/// # #[derive(Serialize, Deserialize)] struct SignupEvent { user_id: i64 }
/// # static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());
/// # async fn demo(bus: tidings_core::Bus, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// sqlx::query("INSERT INTO users (id) VALUES (1)").execute(&mut *tx).await?;
/// tidings_sql::publish_in(&bus, &mut *tx, &SIGNUPS, &SignupEvent { user_id: 1 }).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
pub async fn publish_in<C: InTransaction + ?Sized, T: Serialize>(
    bus: &Bus,
    tx: &mut C,
    topic: &Topic<T>,
    message: &T,
) -> Result<MessageId> {
    publish_in_with(bus, tx, topic, message, PublishOptions::default()).await
}

/// [`publish_in`] with attributes, an ordering key or a reused id.
pub async fn publish_in_with<C: InTransaction + ?Sized, T: Serialize>(
    bus: &Bus,
    tx: &mut C,
    topic: &Topic<T>,
    message: &T,
    options: PublishOptions,
) -> Result<MessageId> {
    if bus.backend_name() != tx.backend_name() {
        return Err(Error::config(format!(
            "publish_in on a {} transaction needs a bus on the {} backend; this bus is on {:?}",
            tx.backend_name(),
            tx.backend_name(),
            bus.backend_name()
        )));
    }
    let out = bus.prepare(topic, message, options)?;
    let id = out.id.clone();
    let resource = bus.settings().resource_name(topic.name());
    tx.write_deliveries(bus, &resource, topic.config().is_exactly_once(), std::slice::from_ref(&out)).await?;
    Ok(id)
}
