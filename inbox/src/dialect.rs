//! What differs between PostgreSQL and SQLite: beginning the transaction, the inbox insert and how a transaction the
//! handler ended itself is noticed, the table's DDL, and the sweep statement.

use async_trait::async_trait;
use tidings_core::Bus;

/// The statements of one inbox table.
#[derive(Debug, Clone)]
#[doc(hidden)]
pub struct Statements {
    pub table: String,
    /// $1 subscription, $2 message id, $3 processed at, $4 expires at; returns a row only when it inserted.
    pub insert: String,
    /// Deletes up to $2 rows that expired before $1.
    pub sweep: String,
    /// Deletes the row of $1 subscription, $2 message id (a batch's message that is not acked).
    pub forget: String,
    /// Reads nothing, but fails when the table or one of its columns is missing.
    pub verify: String,
}

impl Statements {
    pub fn new(table: &str, insert_returning: &str, sweep: String) -> Self {
        Statements {
            table: table.to_string(),
            insert: format!(
                "INSERT INTO {table} (subscription, message_id, processed_at, expires_at) VALUES ($1, $2, $3, $4) ON \
                 CONFLICT (subscription, message_id) DO NOTHING RETURNING {insert_returning}"
            ),
            sweep,
            forget: format!("DELETE FROM {table} WHERE subscription = $1 AND message_id = $2"),
            verify: format!("SELECT subscription, message_id, processed_at, expires_at FROM {table} WHERE 1 = 0"),
        }
    }
}

/// What tells that the handler ended the inbox transaction itself.
#[doc(hidden)]
#[derive(Debug)]
pub enum Mark {
    /// PostgreSQL: the transaction id the inbox row was inserted under (also in a transaction-local setting).
    Txid(i64),
    /// SQLite: set by the connection's commit and rollback hooks.
    Ended(std::sync::Arc<std::sync::atomic::AtomicBool>),
}

/// `CREATE ... IF NOT EXISTS` statements of the table and its index (the same on both databases: SQLite reads
/// `BIGINT` as an integer).
pub(crate) fn ddl(table: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (subscription TEXT NOT NULL, message_id TEXT NOT NULL, processed_at \
             BIGINT NOT NULL, expires_at BIGINT NOT NULL, PRIMARY KEY (subscription, message_id))"
        ),
        format!("CREATE INDEX IF NOT EXISTS {table}_expires ON {table} (expires_at)"),
    ]
}

/// Runs [`Statements::insert`] on `$conn`: the value it returns, or `None` when the row was there already.
macro_rules! insert_row {
    ($ty:ty, $conn:expr, $st:expr, $subscription:expr, $id:expr, $now:expr, $expires:expr) => {
        sqlx::query_scalar::<_, $ty>(&$st.insert)
            .bind($subscription)
            .bind($id)
            .bind($now)
            .bind($expires)
            .fetch_optional(&mut *$conn)
            .await
    };
}

pub(crate) use insert_row;

mod sealed {
    pub trait Sealed {}
}

#[cfg(feature = "postgres")]
impl sealed::Sealed for sqlx::Postgres {}
#[cfg(feature = "sqlite")]
impl sealed::Sealed for sqlx::Sqlite {}

/// A database the inbox runs on: [`sqlx::Postgres`] (feature `postgres`) or [`sqlx::Sqlite`] (feature `sqlite`).
/// Its methods are tidings' own.
#[async_trait]
pub trait InboxDatabase: sqlx::Database + sealed::Sealed {
    #[doc(hidden)]
    fn statements(table: &str) -> Statements;

    /// The connection as one tidings-sql can ack a delivery on.
    #[doc(hidden)]
    fn in_transaction(conn: &mut Self::Connection) -> &mut dyn tidings_sql::InTransaction;

    /// Begins the handler's transaction (SQLite: `BEGIN IMMEDIATE`, the write lock at once).
    #[doc(hidden)]
    async fn begin(pool: &sqlx::Pool<Self>) -> sqlx::Result<sqlx::Transaction<'static, Self>>;

    /// Inserts the inbox row; `None` when it was there already. `Some` carries what [`InboxDatabase::still_open`]
    /// looks at.
    #[doc(hidden)]
    async fn insert(
        conn: &mut Self::Connection,
        st: &Statements,
        subscription: &str,
        id: &str,
        now: i64,
        expires: i64,
    ) -> sqlx::Result<Option<Mark>>;

    /// Runs [`Statements::forget`]: the row of a batch's message that is not acked does not commit.
    #[doc(hidden)]
    async fn forget(conn: &mut Self::Connection, st: &Statements, subscription: &str, id: &str) -> sqlx::Result<()>;

    /// Whether the transaction the inbox row was inserted in is still the open one: the handler did not run
    /// `COMMIT` or `ROLLBACK` itself.
    #[doc(hidden)]
    async fn still_open(conn: &mut Self::Connection, mark: &Mark) -> sqlx::Result<bool>;

    /// After the handler ended the transaction itself: brings the connection back to the state its sqlx
    /// transaction believes in (one transaction open), so rolling that back leaves the connection clean.
    #[doc(hidden)]
    async fn reopen(_conn: &mut Self::Connection) {}

    /// Commits, unless the handler ended the transaction itself (`Ok(false)`: then it is rolled back, the
    /// connection left clean).
    #[doc(hidden)]
    async fn commit(tx: sqlx::Transaction<'static, Self>, mark: &Mark) -> sqlx::Result<bool>;

    /// Whether the table exists (to skip DDL that would lock it).
    #[doc(hidden)]
    async fn table_exists(pool: &sqlx::Pool<Self>, table: &str) -> sqlx::Result<bool>;

    #[doc(hidden)]
    async fn execute(pool: &sqlx::Pool<Self>, sql: &str) -> sqlx::Result<u64>;

    /// The pool's role and the privileges the inbox needs on the table (`SELECT`, `INSERT`, `DELETE`) that it
    /// lacks, in that order; none on a database without privileges (SQLite).
    #[doc(hidden)]
    async fn missing_privileges(_pool: &sqlx::Pool<Self>, _table: &str) -> sqlx::Result<(String, Vec<String>)> {
        Ok((String::new(), Vec::new()))
    }

    /// Runs [`Statements::sweep`]: rows deleted.
    #[doc(hidden)]
    async fn sweep_batch(pool: &sqlx::Pool<Self>, st: &Statements, now: i64, max: i64) -> sqlx::Result<u64>;

    /// Whether the delivery rows of `bus` are in this database ([`tidings_sql::holds_bus_tables`]).
    #[doc(hidden)]
    async fn holds_bus_tables(pool: &sqlx::Pool<Self>, bus: &Bus) -> tidings_core::Result<bool>;
}
