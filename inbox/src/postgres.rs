//! PostgreSQL: a concurrent copy's insert waits on the first copy's uncommitted row (the primary key), then finds
//! it; a handler that ended the transaction itself is noticed by `txid_current()` before the commit.

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool, Postgres};
use tidings_core::Bus;

use crate::dialect::{InboxDatabase, Mark, Statements};

/// A transaction-local setting the inbox insert sets to the transaction's id: gone after a COMMIT or ROLLBACK, and
/// in any other transaction.
const MARK: &str = "tidings.inbox_txid";
/// Whether the transaction open now is the one the inbox row was inserted in.
const STILL_OPEN: &str = "SELECT coalesce(current_setting('tidings.inbox_txid', true) = txid_current()::text, false)";
/// [`STILL_OPEN`] as a division by zero when not, then the commit, chained to a new empty transaction.
const COMMIT: &str =
    "SELECT 1 / coalesce(current_setting('tidings.inbox_txid', true) = txid_current()::text, false)::int; \
                      COMMIT AND CHAIN";

#[async_trait]
impl InboxDatabase for Postgres {
    fn statements(table: &str) -> Statements {
        // Bounded: at most $2 rows per statement, found through the expiry index.
        let sweep = format!(
            "DELETE FROM {table} WHERE (subscription, message_id) IN (SELECT subscription, message_id FROM {table} \
             WHERE expires_at < $1 LIMIT $2)"
        );
        Statements::new(table, &format!("set_config('{MARK}', txid_current()::text, true)"), sweep)
    }

    fn in_transaction(conn: &mut PgConnection) -> &mut dyn tidings_sql::InTransaction {
        conn
    }

    async fn begin(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, Postgres>> {
        pool.begin().await
    }

    async fn insert(
        conn: &mut PgConnection,
        st: &Statements,
        subscription: &str,
        id: &str,
        now: i64,
        expires: i64,
    ) -> sqlx::Result<Option<Mark>> {
        let txid: Option<String> = crate::dialect::insert_row!(String, conn, st, subscription, id, now, expires)?;
        Ok(txid.map(|t| Mark::Txid(t.parse().unwrap_or_default())))
    }

    async fn forget(conn: &mut PgConnection, st: &Statements, subscription: &str, id: &str) -> sqlx::Result<()> {
        sqlx::query(&st.forget).bind(subscription).bind(id).execute(&mut *conn).await.map(drop)
    }

    async fn still_open(conn: &mut PgConnection, _mark: &Mark) -> sqlx::Result<bool> {
        sqlx::query_scalar(STILL_OPEN).fetch_one(&mut *conn).await
    }

    async fn commit(mut tx: sqlx::Transaction<'static, Postgres>, mark: &Mark) -> sqlx::Result<bool> {
        let _ = mark;
        // One round trip: the check (a division by zero when the transaction is not the inbox's any more stops the
        // rest), and the commit, chained to an empty transaction for sqlx's own rollback when the connection goes back
        // to the pool, which that return sends with the ping it makes anyway.
        // A string without arguments goes as a simple query, several statements in one message.
        let conn: &mut PgConnection = &mut tx;
        match sqlx::Executor::execute(conn, COMMIT).await {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("22012") => {
                let _ = tx.rollback().await;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn table_exists(pool: &PgPool, table: &str) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL")
            .bind(table)
            .bind(format!("{table}_expires"))
            .fetch_one(pool)
            .await
    }

    async fn missing_privileges(pool: &PgPool, table: &str) -> sqlx::Result<(String, Vec<String>)> {
        // The table as the role's search path finds it, as the inbox's statements do.
        sqlx::query_as(
            "SELECT quote_ident(current_user), array(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'DELETE']) WITH \
             ORDINALITY AS n(p, i) WHERE NOT has_table_privilege($1::regclass, p) ORDER BY i)",
        )
        .bind(table)
        .fetch_one(pool)
        .await
    }

    async fn execute(pool: &PgPool, sql: &str) -> sqlx::Result<u64> {
        Ok(sqlx::query(sql).execute(pool).await?.rows_affected())
    }

    async fn sweep_batch(pool: &PgPool, st: &Statements, now: i64, max: i64) -> sqlx::Result<u64> {
        Ok(sqlx::query(&st.sweep).bind(now).bind(max).execute(pool).await?.rows_affected())
    }

    async fn holds_bus_tables(pool: &PgPool, bus: &Bus) -> tidings_core::Result<bool> {
        let mut conn = pool.acquire().await.map_err(|e| crate::db_error("connecting", e))?;
        tidings_sql::holds_bus_tables(bus, &mut *conn).await
    }
}
