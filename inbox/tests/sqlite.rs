//! The inbox on SQLite files, with the in-memory bus.
#![cfg(feature = "sqlite")]

mod support;
#[macro_use]
#[path = "support/cases.rs"]
mod cases;

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tidings_inbox::Inbox;

type Db = sqlx::Sqlite;

struct Setup {
    pool: sqlx::SqlitePool,
    inbox: Inbox<Db>,
    effects: String,
    path: std::path::PathBuf,
}

impl Setup {
    async fn cleanup(self) {
        self.pool.close().await;
        for end in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{end}", self.path.display()));
        }
    }
}

async fn setup() -> Setup {
    let path = std::env::temp_dir().join(format!("tidings-inbox-{}.db", support::unique()));
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(10));
    let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.unwrap();
    let effects = "effects".to_string();
    sqlx::query("CREATE TABLE effects (n INTEGER NOT NULL, message_id TEXT NOT NULL)").execute(&pool).await.unwrap();
    let inbox = Inbox::sqlite(pool.clone());
    Setup { pool, inbox, effects, path }
}

fn bus() -> tidings_core::Bus {
    tidings_core::Bus::new(std::sync::Arc::new(tidings_local::LocalBackend::new()))
}

inbox_cases!();

/// A sweep statement deletes at most its batch.
#[tokio::test]
async fn one_sweep_statement_deletes_at_most_its_batch() {
    let s = setup().await;
    s.inbox.migrate().await.unwrap();
    for i in 0..5 {
        sqlx::query(&format!(
            "INSERT INTO {} (subscription, message_id, processed_at, expires_at) VALUES ('s', $1, 0, 1)",
            s.inbox.table()
        ))
        .bind(i.to_string())
        .execute(&s.pool)
        .await
        .unwrap();
    }
    let sweep = format!(
        "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE expires_at < $1 LIMIT $2)",
        t = s.inbox.table()
    );
    let done = sqlx::query(&sweep).bind(10_i64).bind(2_i64).execute(&s.pool).await.unwrap();
    assert_eq!(done.rows_affected(), 2);
    assert_eq!(s.inbox.sweep().await.unwrap(), 3);
    s.cleanup().await;
}
