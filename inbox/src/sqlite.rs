//! SQLite: the transaction begins with `BEGIN IMMEDIATE`, so it holds the database's one write lock from its first
//! statement and concurrent copies run one after the other; a handler that ended the transaction itself is noticed
//! by the connection's commit and rollback hooks.

use async_trait::async_trait;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tidings_core::Bus;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::dialect::{InboxDatabase, Mark, Statements};

#[async_trait]
impl InboxDatabase for Sqlite {
    fn statements(table: &str) -> Statements {
        let sweep =
            format!("DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE expires_at < $1 LIMIT $2)");
        Statements::new(table, "1", sweep)
    }

    fn in_transaction(conn: &mut SqliteConnection) -> &mut dyn tidings_sql::InTransaction {
        conn
    }

    async fn begin(pool: &SqlitePool) -> sqlx::Result<sqlx::Transaction<'static, Sqlite>> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn insert(
        conn: &mut SqliteConnection,
        st: &Statements,
        subscription: &str,
        id: &str,
        now: i64,
        expires: i64,
    ) -> sqlx::Result<Option<Mark>> {
        let inserted = crate::dialect::insert_row!(i64, conn, st, subscription, id, now, expires)?;
        if inserted.is_none() {
            return Ok(None);
        }
        // Any commit or rollback on this connection from now until the inbox's own commit is the handler's. (The
        // hooks stay until the connection's next inbox transaction replaces them; they only set this flag.)
        let ended = Arc::new(AtomicBool::new(false));
        let mut handle = conn.lock_handle().await?;
        let on_commit = ended.clone();
        handle.set_commit_hook(move || {
            on_commit.store(true, Ordering::Release);
            true // sqlx: `true` lets the commit happen (`false` would turn it into a rollback)
        });
        let on_rollback = ended.clone();
        handle.set_rollback_hook(move || on_rollback.store(true, Ordering::Release));
        Ok(Some(Mark::Ended(ended)))
    }

    async fn forget(conn: &mut SqliteConnection, st: &Statements, subscription: &str, id: &str) -> sqlx::Result<()> {
        sqlx::query(&st.forget).bind(subscription).bind(id).execute(&mut *conn).await.map(drop)
    }

    async fn still_open(_conn: &mut SqliteConnection, mark: &Mark) -> sqlx::Result<bool> {
        Ok(matches!(mark, Mark::Ended(ended) if !ended.load(Ordering::Acquire)))
    }

    async fn reopen(conn: &mut SqliteConnection) {
        // sqlx counts one transaction open; give it one (this fails if the handler began another), to roll back.
        let _ = sqlx::query("BEGIN").execute(&mut *conn).await;
    }

    async fn commit(mut tx: sqlx::Transaction<'static, Sqlite>, mark: &Mark) -> sqlx::Result<bool> {
        if !Self::still_open(&mut tx, mark).await? {
            Self::reopen(&mut tx).await;
            let _ = tx.rollback().await;
            return Ok(false);
        }
        tx.commit().await.map(|()| true)
    }

    async fn table_exists(pool: &SqlitePool, table: &str) -> sqlx::Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name IN ($1, $2)")
            .bind(table)
            .bind(format!("{table}_expires"))
            .fetch_one(pool)
            .await?;
        Ok(n == 2)
    }

    async fn execute(pool: &SqlitePool, sql: &str) -> sqlx::Result<u64> {
        Ok(sqlx::query(sql).execute(pool).await?.rows_affected())
    }

    async fn sweep_batch(pool: &SqlitePool, st: &Statements, now: i64, max: i64) -> sqlx::Result<u64> {
        Ok(sqlx::query(&st.sweep).bind(now).bind(max).execute(pool).await?.rows_affected())
    }

    async fn holds_bus_tables(pool: &SqlitePool, bus: &Bus) -> tidings_core::Result<bool> {
        let mut conn = pool.acquire().await.map_err(|e| crate::db_error("connecting", e))?;
        tidings_sql::holds_bus_tables(bus, &mut *conn).await
    }
}
