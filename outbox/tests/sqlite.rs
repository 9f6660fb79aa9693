//! The outbox against SQLite files.
#![cfg(feature = "sqlite")]

mod support;
#[macro_use]
#[path = "support/cases.rs"]
mod cases;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tidings_outbox::Outbox;

async fn setup() -> (Outbox<sqlx::Sqlite>, std::sync::Arc<support::Faults>, String) {
    let path = std::env::temp_dir().join(format!("tidings-outbox-{}.db", support::unique()));
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool: SqlitePool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.unwrap();
    let (bus, faults) = support::bus();
    let outbox = Outbox::new(pool.clone(), bus);
    outbox.migrate().await.unwrap();
    sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY)").execute(&pool).await.unwrap();
    (outbox, faults, "users".into())
}

async fn rows(outbox: &Outbox<sqlx::Sqlite>) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {}", outbox.table())).fetch_one(outbox.pool()).await.unwrap()
}

fn relay_count() -> usize {
    1
}

outbox_cases!();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_relay_per_database_file() {
    let (outbox, faults, _users) = setup().await;
    let t = support::topic::<support::Event>("single", tidings_core::TopicConfig::at_least_once());
    let a = outbox.relay().spawn();
    let b = outbox.relay().spawn();
    let mut tx = outbox.pool().begin().await.unwrap();
    for n in 0..50 {
        outbox.publish(&mut tx, &t, &support::Event { n }).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert!(support::eventually(10, || faults.total() == 50).await);
    // A relay counts a row once it is deleted, a moment after the publish the broker saw.
    assert!(support::eventually(10, || a.relayed() + b.relayed() == 50).await, "{} + {}", a.relayed(), b.relayed());
    assert!(a.relayed() == 0 || b.relayed() == 0, "only the lease holder relays: {} and {}", a.relayed(), b.relayed());
    let total = a.shutdown().await + b.shutdown().await;
    assert_eq!(total, 50, "shutdown returns each relay's final count");
}
