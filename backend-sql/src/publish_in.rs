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
}

#[cfg(feature = "postgres")]
#[async_trait]
impl InTransaction for sqlx::PgConnection {
    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    async fn write_deliveries(&mut self, bus: &Bus, topic: &str, dedup: bool, batch: &[OutgoingMessage]) -> Result<()> {
        let schema = bus.settings().section::<crate::PostgresConfig>("postgres")?.schema;
        crate::config::validate_schema(&schema)?;
        let sql = Sql::new(Dialect::Postgres, Tables::postgres(&schema));
        let channel = crate::postgres::channel(&schema);
        crate::postgres::publish_on(self, &sql, Some(&channel), topic, dedup, batch).await
    }
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
