//! PostgreSQL: a concurrent copy's insert waits on the first copy's uncommitted row (the primary key), then finds
//! it; a handler that ended the transaction itself is noticed by `txid_current()` before the commit.

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool, Postgres};
use tidings_core::Bus;

use crate::dialect::{InboxDatabase, Mark, Statements};

#[async_trait]
impl InboxDatabase for Postgres {
    fn statements(table: &str) -> Statements {
        // Bounded: at most $2 rows per statement, found through the expiry index.
        let sweep = format!(
            "DELETE FROM {table} WHERE (subscription, message_id) IN (SELECT subscription, message_id FROM {table} \
             WHERE expires_at < $1 LIMIT $2)"
        );
        Statements::new(table, "txid_current()", sweep)
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
        let txid = crate::dialect::insert_row!(conn, st, subscription, id, now, expires)?;
        Ok(txid.map(Mark::Txid))
    }

    async fn still_open(conn: &mut PgConnection, mark: &Mark) -> sqlx::Result<bool> {
        // Outside a transaction block (after a COMMIT or ROLLBACK), or in another one, this is another id.
        let now: i64 = sqlx::query_scalar("SELECT txid_current()").fetch_one(&mut *conn).await?;
        Ok(matches!(mark, Mark::Txid(t) if *t == now))
    }

    async fn table_exists(pool: &PgPool, table: &str) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL")
            .bind(table)
            .bind(format!("{table}_expires"))
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
