//! Durable SQL backends of tidings on sqlx: **SQLite** (feature `sqlite`; one file that several processes on one
//! host share, for local development with no daemon) and **PostgreSQL** (feature `postgres`; production without a
//! broker). Everything lives in the database: a publish writes one delivery row per subscription in one transaction,
//! claims lease rows, and [`publish_in`] publishes inside the application's own transaction.
//!
//! Configuration keys, the tables, how each guarantee is kept, limits, the grants PostgreSQL needs, and running it
//! locally: the book's [SQLite and PostgreSQL page](https://example.invalid/tidings/book/backends/sql.html), the one
//! place those tables live.
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use serde::{Deserialize, Serialize};
//! use tidings_core::{Bus, Topic, TopicConfig};
//! use tidings_sql::{SqlBackend, SqliteConfig};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SignupEvent {
//!     user_id: i64,
//! }
//!
//! static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());
//!
//! # let dir = std::env::temp_dir().join(format!("tidings-sql-doc-{}", std::process::id()));
//! let path = dir.join("bus.db"); // created with its directory; WAL mode
//! let bus = Bus::new(Arc::new(SqlBackend::sqlite(SqliteConfig::at(path.clone())).await?));
//!
//! // The application's row and its event commit together, on the application's own connection:
//! let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await?;
//! let mut tx = pool.begin().await?;
//! sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY)").execute(&mut *tx).await?;
//! sqlx::query("INSERT INTO users (id) VALUES (1)").execute(&mut *tx).await?;
//! tidings_sql::publish_in(&bus, &mut *tx, &SIGNUPS, &SignupEvent { user_id: 1 }).await?;
//! tx.commit().await?;
//! # bus.shutdown(std::time::Duration::from_secs(1)).await;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
#![warn(missing_docs)]

mod admin;
pub mod config;
mod dead_letters;
mod driver;
mod error;
mod own_lock;
#[cfg(feature = "postgres")]
mod postgres;
mod publish_in;
pub mod schema;
mod settle_in;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod wake;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tidings_core::backend::{BackendInfo, SubscriptionDriver, SubscriptionSpec, TopicDriver, TopicSpec};
use tidings_core::{Backend, Capabilities, Result};

pub use config::{PostgresConfig, Provisioning, SqliteConfig};
pub use publish_in::{publish_in, publish_in_with, InTransaction};
pub use settle_in::{ack_in, holds_bus_tables};

use admin::AdminStore;
use store::Store;
use wake::Wake;

/// A SQLite or PostgreSQL backend. Clones share the pool.
#[derive(Debug, Clone)]
pub struct SqlBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: &'static str,
    store: Arc<dyn Store>,
    /// The same database, for the operator.
    admin_store: Arc<dyn AdminStore>,
    wake: Arc<Wake>,
    caps: Capabilities,
    provisioning: Provisioning,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl SqlBackend {
    fn new<S: Store + AdminStore + 'static>(
        name: &'static str,
        store: Arc<S>,
        wake: Arc<Wake>,
        max_message_size: usize,
        provisioning: Provisioning,
    ) -> Self {
        let mut caps = Capabilities::default();
        caps.ordering = true;
        caps.exactly_once = true;
        caps.nack_delay = true;
        caps.max_message_size = max_message_size;
        caps.max_publish_batch = 500;
        // A batch of any size is one transaction (its INSERTs take up to MESSAGES_PER_STATEMENT messages each).
        caps.atomic_publish = true;
        caps.max_receive_batch = 256;
        caps.max_settle_batch = store::SETTLE_PER_STATEMENT;
        // A batch handler's batch is claimed in receives of 256 rows and settled in statements of the above.
        caps.max_batch_messages = 10_000;
        caps.max_attributes = 100;
        caps.backlog = true;
        // Delayed delivery is native: a row published with a due time is invisible (`visible_at`) until then.
        caps.delay = true;
        caps.max_native_delay = std::time::Duration::MAX;
        caps.max_delay = std::time::Duration::MAX;
        let admin_store = store.clone();
        let inner = Inner { name, store, admin_store, wake, caps, provisioning, tasks: Mutex::default() };
        SqlBackend { inner: Arc::new(inner) }
    }

    fn own_task(&self, task: tokio::task::AbortHandle) {
        self.inner.tasks.lock().unwrap().push(task);
    }

    /// Opens (creating it, with `provisioning = "auto"`) the SQLite database `config.path`.
    #[cfg(feature = "sqlite")]
    pub async fn sqlite(config: SqliteConfig) -> Result<Self> {
        sqlite::open(config).await
    }

    /// Connects to PostgreSQL and (with `provisioning = "auto"`) creates the schema and tables.
    #[cfg(feature = "postgres")]
    pub async fn postgres(config: PostgresConfig) -> Result<Self> {
        postgres::open(config).await
    }

    /// Reads the section of `settings.backend` (`[sqlite]` or `[postgres]`) and opens that backend.
    pub async fn from_settings(settings: &tidings_core::Settings) -> Result<Self> {
        match settings.backend.as_str() {
            #[cfg(feature = "sqlite")]
            "sqlite" => Self::sqlite(settings.section("sqlite")?).await,
            #[cfg(feature = "postgres")]
            "postgres" => Self::postgres(settings.section("postgres")?).await,
            other => Err(tidings_core::Error::config(format!(
                "tidings-sql cannot open backend {other:?}: this build has {}",
                [cfg!(feature = "sqlite").then_some("sqlite"), cfg!(feature = "postgres").then_some("postgres")]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Messages dead-lettered in a subscription (by its resource name, `<topic>--<subscription>` by default).
    pub async fn dead_letter_depth(&self, subscription: &str, topic: &str) -> Result<u64> {
        let id = self.inner.store.register(topic, subscription, false).await?;
        let sql = &self.inner.store.sql().dead_depth;
        self.inner.store.count(sql, id).await
    }
}

/// The SQL backends' names (`sqlite`, `postgres`; no per-call price). Opening one creates its tables unless
/// `provisioning = "verify"`.
pub fn info(name: &'static str) -> BackendInfo {
    BackendInfo::new(name).with_provisioning(true)
}

#[async_trait]
impl Backend for SqlBackend {
    fn name(&self) -> &str {
        self.inner.name
    }

    fn info(&self) -> BackendInfo {
        info(self.inner.name)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.caps.clone()
    }

    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>> {
        Ok(Arc::new(driver::SqlTopic {
            store: self.inner.store.clone(),
            wake: self.inner.wake.clone(),
            topic: spec.resource.clone(),
            dedup: spec.config.is_exactly_once(),
        }))
    }

    /// Operator access: exact figures from the rows, and each subscription's dead-letter queue.
    fn admin(&self) -> Option<Arc<dyn tidings_core::admin::Admin>> {
        let (store, admin_store, wake) =
            (self.inner.store.clone(), self.inner.admin_store.clone(), self.inner.wake.clone());
        Some(Arc::new(admin::SqlAdmin { store, admin_store, wake }))
    }

    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>> {
        let create = self.inner.provisioning == Provisioning::Auto;
        let sub = self.inner.store.register(&spec.topic.resource, &spec.resource, create).await?;
        Ok(Arc::new(driver::SqlSubscription {
            store: self.inner.store.clone(),
            wake: self.inner.wake.clone(),
            notify: self.inner.wake.topic(&spec.topic.resource),
            topic: spec.topic.resource.clone(),
            sub,
            ordered: spec.topic.config.ordered,
            dedup: spec.topic.config.is_exactly_once(),
            config: spec.config,
            last_sweep: Mutex::default(),
            held: settle_in::Held::register(
                &spec.resource,
                spec.topic.config.is_exactly_once(),
                spec.config.message_retention,
            ),
        }))
    }
}
