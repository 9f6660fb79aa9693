//! Transactional outbox for tidings: publish a message **in the same database transaction** as the application's
//! own writes; a relay publishes committed rows through the configured bus, at least once, in order per topic.
//!
//! Rollback means nothing is ever published; commit means it will be. The tidings message id is assigned when the
//! row is written and reused on every relay retry, so exactly-once topics de-duplicate a republish after a relay
//! crash.
//!
//! ```
//! # use std::time::Duration;
//! # use serde::{Deserialize, Serialize};
//! # use tidings::{Message, SubscriptionConfig, Topic, TopicConfig};
//! # #[derive(Serialize, Deserialize)] struct SignupEvent { user_id: i64 }
//! # static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let file = std::env::temp_dir().join(format!("tidings-outbox-doc-{}.db", std::process::id()));
//! # let url = format!("sqlite://{}?mode=rwc", file.display());
//! use tidings_outbox::Outbox;
//!
//! let bus = tidings::local(); // an application: tidings::from_env().await?
//! # let (seen, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! # bus.subscribe(&SIGNUPS, "email", SubscriptionConfig::default(), move |m: Message<SignupEvent>| {
//! #     let seen = seen.clone();
//! #     async move { seen.send(m.user_id).map_err(tidings::HandlerError::retry) }
//! # }).await?;
//! let pool = sqlx::SqlitePool::connect(&url).await?; // such as "sqlite://app.db?mode=rwc"
//! # sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY)").execute(&pool).await?;
//! let outbox = Outbox::new(pool.clone(), bus);
//! outbox.migrate().await?;
//! let relay = outbox.relay().spawn(); // or run it in a separate process
//!
//! let mut tx = pool.begin().await?;
//! sqlx::query("INSERT INTO users (id) VALUES (1)").execute(&mut *tx).await?;
//! outbox.publish(&mut tx, &SIGNUPS, &SignupEvent { user_id: 1 }).await?;
//! tx.commit().await?; // the event is relayed once this commits
//! # assert_eq!(tokio::time::timeout(Duration::from_secs(10), rx.recv()).await?, Some(1));
//!
//! let relayed: u64 = relay.shutdown().await; // finishes the batch in flight
//! # assert_eq!(relayed, 1);
//! # pool.close().await;
//! # for end in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{end}", file.display())); }
//! # Ok(())
//! # }
//! ```
//!
//! PostgreSQL: several relays share the work (`FOR UPDATE SKIP LOCKED` on each topic's oldest row, so one relay owns a
//! topic at a time and per-topic order holds) and `LISTEN/NOTIFY` wakes them within milliseconds of a commit, with
//! polling as the fallback. SQLite: one active relay per database file (a lease row; other relays stand by).
#![warn(missing_docs)]

#[cfg(feature = "postgres")]
mod postgres;
mod relay;
mod row;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;

use serde::Serialize;
use tidings_core::{Bus, Error, MessageId, PublishOptions, Result, Topic};

pub use relay::{Relay, RelayHandle};

/// Default outbox table name.
pub const DEFAULT_TABLE: &str = "tidings_outbox";

/// An outbox table in one database, feeding one bus. Cheap to clone (whatever the database type).
pub struct Outbox<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    bus: Bus,
    table: Arc<str>,
    /// Wakes this process's SQLite relay after a publish (PostgreSQL relays wake by NOTIFY).
    #[cfg(feature = "sqlite")]
    wake: Arc<tokio::sync::Notify>,
}

impl<DB: sqlx::Database> Clone for Outbox<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            bus: self.bus.clone(),
            table: self.table.clone(),
            #[cfg(feature = "sqlite")]
            wake: self.wake.clone(),
        }
    }
}

impl<DB: sqlx::Database> std::fmt::Debug for Outbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("table", &self.table).field("bus", &self.bus).finish()
    }
}

impl<DB: sqlx::Database> Outbox<DB> {
    /// An outbox in the table `tidings_outbox`, relayed to `bus`.
    pub fn new(pool: sqlx::Pool<DB>, bus: Bus) -> Self {
        Self {
            pool,
            bus,
            table: DEFAULT_TABLE.into(),
            #[cfg(feature = "sqlite")]
            wake: Arc::default(),
        }
    }

    /// Uses another table name: 1-48 characters of `[a-z0-9_]`, starting with a letter or `_`.
    pub fn with_table(mut self, table: &str) -> Result<Self> {
        validate_table(table)?;
        self.table = table.into();
        Ok(self)
    }

    /// The connection pool.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The bus the relay publishes to (also used to validate messages when they are written).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

fn validate_table(table: &str) -> Result<()> {
    let ok = !table.is_empty()
        && table.len() <= 48
        && table.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !table.as_bytes()[0].is_ascii_digit();
    if !ok {
        return Err(Error::invalid(format!(
            "invalid outbox table name {table:?}: it must be 1-48 characters of [a-z0-9_], not starting with a digit"
        )));
    }
    Ok(())
}

/// Encodes and validates a message for the outbox exactly as a direct publish would.
fn prepare<T: Serialize>(
    bus: &Bus,
    topic: &Topic<T>,
    message: &T,
    options: PublishOptions,
) -> Result<(row::NewRow, MessageId)> {
    let out = bus.prepare(topic, message, options)?;
    let id = out.id.clone();
    Ok((row::NewRow::new(topic.name(), topic.config(), out)?, id))
}

/// [`db_error`], except that a table without the `deliver_at` column (created by tidings-outbox 0.1) gets an error
/// naming its fix, [`Outbox::migrate`].
fn table_error(table: &str, what: &str, e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(d) = &e {
        if d.message().contains("deliver_at") {
            return Error::config(format!(
                "outbox: {what} failed: the outbox table {table} has no deliver_at column (the due time of delayed \
                 messages, added in tidings-outbox 0.2): call Outbox::migrate() once to add it ({})",
                d.message()
            ))
            .with_source(e);
        }
    }
    db_error(what, e)
}

fn db_error(what: &str, e: sqlx::Error) -> Error {
    let retryable = matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed);
    Error::backend(format!("outbox: {what} failed: {e}"), retryable).with_source(e)
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_names_are_validated_with_the_rule() {
        for ok in ["tidings_outbox", "_x", "a1"] {
            super::validate_table(ok).unwrap();
        }
        for bad in ["", "1abc", "Outbox", "a;drop table x", "a-b", &"a".repeat(49)] {
            let e = super::validate_table(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")) && e.contains("[a-z0-9_]"), "{e}");
        }
    }
}
