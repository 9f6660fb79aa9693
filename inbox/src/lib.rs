//! Transactional inbox for tidings: a handler whose database effects happen **once per message**, on every backend.
//!
//! tidings delivers at least once: now and then a handler runs twice for one message (a lease ran out, a consumer
//! crashed between its commit and its ack). The inbox makes the handler's *effect* happen once. It hands the
//! handler an open transaction on the application's own database (PostgreSQL or SQLite, through sqlx) in which it
//! has already recorded `(subscription, message id)` in an inbox table. The handler's writes, that row and any
//! outbox publishes made in the transaction commit together, and only then is the message acked. A message whose
//! row is there already was processed: the handler is skipped and the message acked. A handler that fails or
//! panics rolls everything back, and the message is retried or dead-lettered as usual.
//!
//! - **Any backend**: the effect happens exactly once while the message's row is kept (the *window*, by default the
//!   subscription's message retention; expired rows are swept in bounded batches).
//! - **A SQL bus on the same database**: the delivery row is acked by a statement of the same transaction, so a
//!   crash between the commit and the ack leaves nothing to redeliver; processing is exact, with no window.
//!
//! What the handler does outside the transaction (an email, an HTTP call) stays at least once.
//!
//! ```
//! # use std::time::Duration;
//! # use serde::{Deserialize, Serialize};
//! # use tidings::{SubscriptionConfig, Topic, TopicConfig};
//! # #[derive(Serialize, Deserialize)] struct Payment { order: i64, cents: i64 }
//! # static PAYMENTS: Topic<Payment> = Topic::new("payments", TopicConfig::at_least_once());
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let file = std::env::temp_dir().join(format!("tidings-inbox-doc-{}.db", std::process::id()));
//! # let url = format!("sqlite://{}?mode=rwc", file.display());
//! use tidings_inbox::Inbox;
//!
//! let bus = tidings::local(); // an application: tidings::from_env().await?
//! let pool = sqlx::SqlitePool::connect(&url).await?; // or a PgPool, with Inbox::postgres
//! # sqlx::query("CREATE TABLE ledger (order_id INTEGER, cents INTEGER)").execute(&pool).await?;
//! let inbox = Inbox::sqlite(pool.clone()); // its table, tidings_inbox, is created at the first subscribe
//!
//! let billing = inbox
//!     .subscribe(&bus, &PAYMENTS, "billing", SubscriptionConfig::default(), |payment, mut tx| async move {
//!         sqlx::query("INSERT INTO ledger (order_id, cents) VALUES (?, ?)")
//!             .bind(payment.order)
//!             .bind(payment.cents)
//!             .execute(&mut *tx)
//!             .await?;
//!         Ok(tx) // committed by the inbox, then acked; an Err (or a panic) rolls it all back
//!     })
//!     .await?;
//!
//! let id = PAYMENTS.publish(&bus, &Payment { order: 7, cents: 1250 }).await?;
//! // The same message again (a redelivery, a republish with its id): skipped, acked.
//! # assert!(billing.wait_idle(Duration::from_secs(10)).await?);
//! PAYMENTS.publish_with(&bus, &Payment { order: 7, cents: 1250 }, tidings::PublishOptions::new().id(id)).await?;
//! # assert!(billing.wait_idle(Duration::from_secs(10)).await?);
//! # let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger").fetch_one(&pool).await?;
//! # assert_eq!(rows, 1, "the effect happened once");
//! bus.shutdown(Duration::from_secs(5)).await;
//! # pool.close().await;
//! # for end in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{end}", file.display())); }
//! # Ok(())
//! # }
//! ```
//!
//! The handler gets an [`InboxTx`], which derefs to the connection (`&mut *tx` is an sqlx executor, and what
//! `tidings_outbox::Outbox::publish` and `tidings::sql::publish_in` take) but has no `commit` or `rollback`: the
//! inbox ends the transaction. A handler that runs `COMMIT` or `ROLLBACK` itself gets an error instead of an ack
//! (PostgreSQL: the transaction-local setting its insert made is gone; SQLite: the connection's commit and rollback
//! hooks fired).
//!
//! The table (default `tidings_inbox`; `provisioning` as the bus's backend section sets it, or
//! [`Inbox::with_provisioning`]):
//!
//! | column | type | what |
//! |---|---|---|
//! | `subscription` | text | the subscription's resource name (`<prefix><topic>--<subscription>`) |
//! | `message_id` | text | tidings' message id ([`tidings_core::Message::id`]) |
//! | `processed_at` | bigint | when the handler's transaction wrote it, µs since the Unix epoch |
//! | `expires_at` | bigint | `processed_at` plus the window; swept after that |
//!
//! with the primary key `(subscription, message_id)` and an index on `expires_at`.
#![warn(missing_docs)]

mod batch;
mod dialect;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod sweep;

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use metrics::Counter;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tidings_core::backend::cloud::Provisioning;
use tidings_core::handler::HandlerFuture;
use tidings_core::{
    Bus, Error, ErrorKind, Handler, HandlerError, HandlerResult, Message, Result, Subscription, SubscriptionConfig,
    Topic,
};

pub use batch::InboxBatchResult;
pub use dialect::InboxDatabase;
use dialect::Statements;
use sweep::Sweeper;

/// Default inbox table name.
pub const DEFAULT_TABLE: &str = "tidings_inbox";

/// Messages whose handler's transaction committed, by `table`, `topic`, `subscription` (a counter).
pub const PROCESSED: &str = "tidings.inbox.processed";
/// Deliveries skipped because their message's inbox row was there already (a duplicate, acked without running the
/// handler), by `table`, `topic`, `subscription` (a counter).
pub const SKIPPED: &str = "tidings.inbox.skipped";
/// Expired inbox rows deleted by the sweep, by `table` (a counter).
pub const SWEPT: &str = "tidings.inbox.swept";

/// Default time between two sweeps of expired rows.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Default most rows one sweep statement deletes.
pub const DEFAULT_SWEEP_BATCH: usize = 1_000;

/// An inbox table in the application's database: PostgreSQL ([`Inbox::postgres`]) or SQLite ([`Inbox::sqlite`]).
/// Cheap to clone; clones share the table's sweep.
pub struct Inbox<DB: InboxDatabase> {
    pool: sqlx::Pool<DB>,
    table: Arc<str>,
    window: Option<Duration>,
    provisioning: Option<Provisioning>,
    sweep_interval: Duration,
    sweep_batch: usize,
    shared: Arc<Shared>,
}

/// What clones of one inbox share.
#[derive(Default)]
struct Shared {
    /// The table was created (or found) once by this inbox.
    provisioned: tokio::sync::OnceCell<()>,
    /// The sweep task, while a subscription of this inbox runs.
    sweeper: Mutex<Weak<Sweeper>>,
}

impl<DB: InboxDatabase> Clone for Inbox<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            table: self.table.clone(),
            window: self.window,
            provisioning: self.provisioning,
            sweep_interval: self.sweep_interval,
            sweep_batch: self.sweep_batch,
            shared: self.shared.clone(),
        }
    }
}

impl<DB: InboxDatabase> std::fmt::Debug for Inbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("database", &<DB as sqlx::Database>::NAME)
            .field("table", &self.table)
            .field("window", &self.window)
            .field("provisioning", &self.provisioning)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "postgres")]
impl Inbox<sqlx::Postgres> {
    /// An inbox in the table `tidings_inbox` of this PostgreSQL database. Nothing is read or written until the
    /// first [`Inbox::subscribe`] (or [`Inbox::migrate`]).
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self::new(pool)
    }
}

#[cfg(feature = "sqlite")]
impl Inbox<sqlx::Sqlite> {
    /// An inbox in the table `tidings_inbox` of this SQLite database. Nothing is read or written until the first
    /// [`Inbox::subscribe`] (or [`Inbox::migrate`]). Handlers' transactions take the database's write lock when they
    /// begin, so handlers on one SQLite file run their transactions one at a time.
    pub fn sqlite(pool: sqlx::SqlitePool) -> Self {
        Self::new(pool)
    }
}

impl<DB: InboxDatabase> Inbox<DB> {
    fn new(pool: sqlx::Pool<DB>) -> Self {
        Self {
            pool,
            table: DEFAULT_TABLE.into(),
            window: None,
            provisioning: None,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            sweep_batch: DEFAULT_SWEEP_BATCH,
            shared: Arc::default(),
        }
    }

    /// Another settings change makes another inbox (its own sweep), so a running one never changes under it.
    fn changed(mut self) -> Self {
        self.shared = Arc::default();
        self
    }

    /// Uses another table: 1-48 characters of `[a-z0-9_]`, not starting with a digit.
    pub fn with_table(mut self, table: &str) -> Result<Self> {
        let ok = !table.is_empty()
            && table.len() <= 48
            && table.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !table.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(Error::invalid(format!(
                "invalid inbox table name {table:?}: it must be 1-48 characters of [a-z0-9_], not starting with a digit"
            )));
        }
        self.table = table.into();
        Ok(self.changed())
    }

    /// How long a message's row is kept after its transaction committed: within it a redelivery of the message is
    /// skipped; after it, the row is swept and a redelivery runs the handler again. Default: the subscription's
    /// `message_retention` (7 days unless configured), past which the backend no longer redelivers it either.
    pub fn with_window(mut self, window: Duration) -> Result<Self> {
        if window.is_zero() {
            return Err(Error::invalid("inbox window 0s is invalid: it must be positive"));
        }
        self.window = Some(window);
        Ok(self.changed())
    }

    /// Whether a subscribe creates the table (`Auto`), checks it and fails naming it when it is missing (`Verify`),
    /// or trusts it is there (`Off`). Default: the `provisioning` key of the bus's backend section (as
    /// `[postgres] provisioning = "verify"`), and `Auto` where it has none.
    pub fn with_provisioning(mut self, provisioning: Provisioning) -> Self {
        self.provisioning = Some(provisioning);
        self.changed()
    }

    /// How often expired rows are swept while a subscription of this inbox runs (default 60 s), and the most rows one
    /// sweep statement deletes (default 1,000); a sweep runs statements until one deletes fewer.
    pub fn with_sweep(mut self, interval: Duration, batch: usize) -> Result<Self> {
        if interval.is_zero() {
            return Err(Error::invalid("inbox sweep interval 0s is invalid: it must be positive"));
        }
        if batch == 0 || batch > i64::MAX as usize {
            return Err(Error::invalid(format!(
                "inbox sweep batch {batch} is invalid: it must be between 1 and {}",
                i64::MAX
            )));
        }
        self.sweep_interval = interval;
        self.sweep_batch = batch;
        Ok(self.changed())
    }

    /// The connection pool.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The statements to create the table and its index, as [`Inbox::migrate`] runs them (for a migration tool when
    /// the application runs with `provisioning = "verify"`).
    pub fn ddl(&self) -> Vec<String> {
        dialect::ddl(&self.table)
    }

    /// Creates the table and its index if they do not exist (when both exist, it only looks).
    pub async fn migrate(&self) -> Result<()> {
        let exists = |pool| async move {
            DB::table_exists(pool, &self.table).await.map_err(|e| db_error("looking for the inbox table", e))
        };
        if exists(&self.pool).await? {
            return Ok(());
        }
        for sql in self.ddl() {
            if let Err(e) = DB::execute(&self.pool, &sql).await {
                // Another process creating it at the same moment: fine once it is there.
                if exists(&self.pool).await? {
                    return Ok(());
                }
                return Err(db_error(&format!("creating the inbox table {}", self.table), e));
            }
        }
        Ok(())
    }

    /// Fails, naming the table and the book's inbox page, when the table or one of its columns is missing, or (on
    /// PostgreSQL) when the pool's role lacks `SELECT`, `INSERT` or `DELETE` on it (naming the role, the privileges
    /// and the `GRANT` that gives them).
    pub async fn verify(&self) -> Result<()> {
        let st = DB::statements(&self.table);
        let e = match DB::execute(&self.pool, &st.verify).await {
            Ok(_) => return self.check_privileges().await,
            Err(e) => e,
        };
        if matches!(&e, sqlx::Error::Database(d) if d.code().as_deref() == Some("42501")) {
            // There, but SELECT is denied: name what the role lacks.
            self.check_privileges().await?;
        }
        Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "the inbox table {} is missing from this {} database (or out of the role's sight: on PostgreSQL its \
                 schema needs USAGE and a place on the search_path), or lacks one of its columns ({e}); with \
                 provisioning = \"verify\" tidings does not create it: create it with Inbox::ddl's statements (the \
                 schema is on {}), or run once with provisioning = \"auto\"",
                self.table,
                <DB as sqlx::Database>::NAME,
                tidings_core::book::url(tidings_core::book::INBOX)
            ),
        )
        .with_source(e))
    }

    /// Fails with the role, the privileges it lacks on the table and their `GRANT`.
    async fn check_privileges(&self) -> Result<()> {
        let (role, missing) = DB::missing_privileges(&self.pool, &self.table)
            .await
            .map_err(|e| db_error(&format!("reading the privileges on the inbox table {}", self.table), e))?;
        if missing.is_empty() {
            return Ok(());
        }
        let missing = missing.join(", ");
        Err(Error::backend(
            format!(
                "the role {role} lacks {missing} on the inbox table {table}: the inbox needs SELECT, INSERT and DELETE \
                 on it (GRANT {missing} ON {table} TO {role}; see {})",
                tidings_core::book::url(tidings_core::book::INBOX),
                table = self.table,
            ),
            false,
        ))
    }

    /// Deletes the rows whose window ended, in statements of at most the sweep batch, until one deletes fewer;
    /// returns how many. A running subscription of this inbox does this every sweep interval.
    pub async fn sweep(&self) -> Result<u64> {
        sweep::sweep_all::<DB>(&self.pool, &DB::statements(&self.table), self.sweep_batch).await
    }

    async fn provision(&self, bus: &Bus) -> Result<()> {
        match self.provisioning.unwrap_or_else(|| bus_provisioning(bus)) {
            Provisioning::Auto => {
                self.shared.provisioned.get_or_try_init(|| self.migrate()).await?;
                self.check_privileges().await
            }
            Provisioning::Verify => self.verify().await,
            Provisioning::Off => Ok(()),
        }
    }

    /// Subscribes `handler` to `topic` on `bus` as [`Bus::subscribe`] does, through the inbox: each delivery runs in
    /// a transaction of this inbox's database that first records the message; it commits when the handler returns
    /// `Ok(tx)` and then the message is acked. A message recorded already is acked without running the handler. An
    /// `Err` or a panic rolls the transaction back and the delivery is retried, then dead-lettered, by `config`'s
    /// retry policy.
    ///
    /// Provisions the table first (see [`Inbox::with_provisioning`]): with `Verify` a missing table fails here,
    /// naming it. The runtime's features (concurrency, retries, dead letters, leases, shutdown) work as for any
    /// handler; each running handler holds one connection of the pool, so size it to the subscriptions'
    /// `max_concurrency` (or lower that).
    pub async fn subscribe<T, F, Fut>(
        &self,
        bus: &Bus,
        topic: &Topic<T>,
        name: &str,
        config: SubscriptionConfig,
        handler: F,
    ) -> Result<Subscription>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(Message<T>, InboxTx<DB>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<InboxTx<DB>, HandlerError>> + Send + 'static,
    {
        let handler = self.handler(bus, topic, name, config, handler).await?;
        bus.subscribe(topic, name, config, handler).await
    }

    /// The handler [`Inbox::subscribe`] subscribes, for wrapping it before [`Bus::subscribe`]: pass the same topic,
    /// subscription name and config there (the inbox keys its rows by that subscription).
    pub async fn handler<T, F, Fut>(
        &self,
        bus: &Bus,
        topic: &Topic<T>,
        name: &str,
        config: SubscriptionConfig,
        handler: F,
    ) -> Result<impl Handler<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(Message<T>, InboxTx<DB>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<InboxTx<DB>, HandlerError>> + Send + 'static,
    {
        Ok(InboxHandler { run: self.run(bus, topic, name, config).await?, f: Arc::new(handler) })
    }

    /// What the deliveries of one subscription through this inbox need; checks the name and provisions the table.
    async fn run<T>(
        &self,
        bus: &Bus,
        topic: &Topic<T>,
        name: &str,
        config: SubscriptionConfig,
    ) -> Result<Arc<Run<DB>>> {
        tidings_core::validate_name("subscription", name)?;
        let spec = bus.subscription_spec(topic, name, config);
        self.provision(bus).await?;
        // The bus's deliveries in this database: acked in the handler's transaction.
        let exact = DB::holds_bus_tables(&self.pool, bus).await?;
        if exact {
            tracing::info!(target: "tidings", subscription = %spec.resource, table = %self.table,
                "inbox on the bus's database: each delivery is acked in its handler's transaction");
        }
        let labels = [
            ("table", self.table.to_string()),
            ("topic", topic.name().to_string()),
            ("subscription", name.to_string()),
        ];
        let run = Run {
            pool: self.pool.clone(),
            st: DB::statements(&self.table),
            bus: bus.clone(),
            resource: spec.resource.clone(),
            window: self.window.unwrap_or(spec.config.message_retention),
            exact,
            processed: metrics::counter!(PROCESSED, &labels),
            skipped: metrics::counter!(SKIPPED, &labels),
            _sweeper: self.sweeper(),
        };
        Ok(Arc::new(run))
    }

    /// The running sweep of this inbox, started if none runs.
    fn sweeper(&self) -> Arc<Sweeper> {
        let mut current = self.shared.sweeper.lock().unwrap();
        if let Some(s) = current.upgrade() {
            return s;
        }
        let s =
            Sweeper::start::<DB>(self.pool.clone(), DB::statements(&self.table), self.sweep_interval, self.sweep_batch);
        *current = Arc::downgrade(&s);
        s
    }
}

/// The provisioning mode of the bus's backend section (`[postgres] provisioning = "verify"`), `Auto` without one.
fn bus_provisioning(bus: &Bus) -> Provisioning {
    #[derive(serde::Deserialize)]
    struct Section {
        #[serde(default)]
        provisioning: Option<Provisioning>,
    }
    bus.settings().section::<Section>(bus.backend_name()).ok().and_then(|s| s.provisioning).unwrap_or_default()
}

/// The handler's view of its inbox transaction: derefs to the connection (`&mut *tx` is an sqlx executor), and
/// has no `commit` or `rollback`. Return it (`Ok(tx)`) for the inbox to commit; drop it (return an `Err`) to roll
/// back.
pub struct InboxTx<DB: InboxDatabase> {
    tx: sqlx::Transaction<'static, DB>,
    /// Which delivery's transaction this is (a handler must hand back its own).
    token: u64,
}

impl<DB: InboxDatabase> Deref for InboxTx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: InboxDatabase> DerefMut for InboxTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

impl<DB: InboxDatabase> std::fmt::Debug for InboxTx<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxTx").field("database", &<DB as sqlx::Database>::NAME).finish_non_exhaustive()
    }
}

/// One subscription's inbox: what each delivery needs.
struct Run<DB: InboxDatabase> {
    pool: sqlx::Pool<DB>,
    st: Statements,
    bus: Bus,
    /// The subscription's resource name: the `subscription` column.
    resource: String,
    window: Duration,
    /// Ack the delivery row in the transaction (a SQL bus on this database).
    exact: bool,
    processed: Counter,
    skipped: Counter,
    /// Keeps the table's sweep running while this subscription's handler exists.
    _sweeper: Arc<Sweeper>,
}

/// A handler that runs the application's handler inside an inbox transaction.
struct InboxHandler<DB: InboxDatabase, F> {
    run: Arc<Run<DB>>,
    f: Arc<F>,
}

impl<T, DB, F, Fut> Handler<T> for InboxHandler<DB, F>
where
    T: Send + 'static,
    DB: InboxDatabase,
    F: Fn(Message<T>, InboxTx<DB>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<InboxTx<DB>, HandlerError>> + Send + 'static,
{
    fn call(&self, message: Message<T>) -> HandlerFuture {
        let (run, f) = (self.run.clone(), self.f.clone());
        Box::pin(async move { run.handle(message, &*f).await })
    }
}

static TOKENS: AtomicU64 = AtomicU64::new(1);

fn micros(t: SystemTime) -> i64 {
    tidings_core::backend::time::micros(t)
}

impl<DB: InboxDatabase> Run<DB> {
    async fn handle<T, F, Fut>(&self, message: Message<T>, f: &F) -> HandlerResult
    where
        F: Fn(Message<T>, InboxTx<DB>) -> Fut,
        Fut: Future<Output = std::result::Result<InboxTx<DB>, HandlerError>>,
    {
        let id = message.id().clone();
        let mut tx = DB::begin(&self.pool).await.map_err(|e| failed("beginning the transaction", e))?;
        let now = micros(SystemTime::now());
        let expires = now.saturating_add(self.window.as_micros().min(i64::MAX as u128) as i64);
        let inserted = DB::insert(&mut tx, &self.st, &self.resource, id.as_str(), now, expires)
            .await
            .map_err(|e| failed("recording the message in the inbox", e))?;
        let Some(mark) = inserted else {
            // Processed already: nothing to do but let the runtime ack this copy.
            let _ = tx.rollback().await;
            self.skipped.increment(1);
            tracing::debug!(target: "tidings", subscription = %self.resource, id = %id, tidings.inbox = "skipped",
                "message already processed (its inbox row is there): skipped and acked");
            return Ok(());
        };
        let token = TOKENS.fetch_add(1, Ordering::Relaxed);
        let back = f(message, InboxTx { tx, token }).await?;
        if back.token != token {
            return Err(HandlerError::retry(
                "inbox: the handler returned another delivery's transaction; it must return the one it was given",
            ));
        }
        let mut tx = back.tx;
        if self.exact {
            // Checked first: after a handler's own ROLLBACK, the ack would commit on its own.
            let open = DB::still_open(&mut tx, &mark).await.map_err(|e| failed("checking the transaction", e))?;
            if !open {
                DB::reopen(&mut tx).await;
                let _ = tx.rollback().await;
                return Err(ended_by_handler());
            }
            tidings_sql::ack_in(&self.bus, DB::in_transaction(&mut tx), &self.resource, &id).await.map_err(|e| {
                HandlerError::retry(format!("inbox: acking the delivery in the transaction failed: {e}"))
            })?;
        }
        match DB::commit(tx, &mark).await {
            Ok(true) => {}
            Ok(false) => return Err(ended_by_handler()),
            Err(e) => return Err(failed("committing", e)),
        }
        self.processed.increment(1);
        Ok(())
    }
}

/// The error of a handler that ran `COMMIT` or `ROLLBACK` itself.
fn ended_by_handler() -> HandlerError {
    HandlerError::retry(
        "inbox: the handler ended the inbox transaction itself (it ran COMMIT or ROLLBACK): the inbox commits it, \
         once the handler returns Ok(tx); the message is retried",
    )
}

fn failed(what: &str, e: sqlx::Error) -> HandlerError {
    HandlerError::retry(format!("inbox: {what} failed: {e}"))
}

fn db_error(what: &str, e: sqlx::Error) -> Error {
    let retryable = matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed);
    Error::backend(format!("inbox: {what} failed: {e}"), retryable).with_source(e)
}
