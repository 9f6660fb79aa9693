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

/// The first bind parameter in this database's SQL.
const PARAM: &str = "?";

/// A copy of `outbox`'s table under a new name, empty, as tidings-outbox 0.1 created it (no `deliver_at`).
async fn v0_1_table(outbox: &Outbox<sqlx::Sqlite>) -> Outbox<sqlx::Sqlite> {
    let old = outbox.clone().with_table(&format!("old_{}", support::unique())).unwrap();
    let t = old.table();
    for sql in [
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, \
             exactly_once BOOLEAN NOT NULL, ordered BOOLEAN NOT NULL, message_id TEXT NOT NULL, \
             payload BLOB NOT NULL, attributes TEXT NOT NULL, ordering_key TEXT, created_at INTEGER NOT NULL)"
        ),
        format!("CREATE INDEX IF NOT EXISTS {t}_topic_seq ON {t} (topic, seq)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {t}_relay (id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, \
             expires_at INTEGER NOT NULL)"
        ),
    ] {
        sqlx::query(&sql).execute(old.pool()).await.unwrap();
    }
    old
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

/// A relay that shuts down hands its lease over, so a standby relays at once instead of after the lease expires
/// (10 s): the lease row's expiry is in the past right after the shutdown, and the next relay takes the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_shut_down_hands_its_lease_over() {
    let (outbox, faults, _users) = setup().await;
    let t = support::topic::<support::Event>("handover", tidings_core::TopicConfig::at_least_once());
    let a = outbox.relay().spawn();
    let mut tx = outbox.pool().begin().await.unwrap();
    outbox.publish(&mut tx, &t, &support::Event { n: 1 }).await.unwrap();
    tx.commit().await.unwrap();
    assert!(support::eventually(10, || a.relayed() == 1).await, "the first relay took the lease and relayed");
    a.shutdown().await;
    let expires: i64 = sqlx::query_scalar(&format!("SELECT expires_at FROM {}_relay", outbox.table()))
        .fetch_one(outbox.pool())
        .await
        .unwrap();
    let now = tidings_core::backend::time::micros(std::time::SystemTime::now());
    assert!(expires < now, "the lease was handed over at shutdown: it expires at {expires}, now is {now}");
    let b = outbox.relay().spawn();
    let mut tx = outbox.pool().begin().await.unwrap();
    outbox.publish(&mut tx, &t, &support::Event { n: 2 }).await.unwrap();
    tx.commit().await.unwrap();
    assert!(support::eventually(10, || b.relayed() == 1).await, "the next relay took over");
    assert_eq!(b.shutdown().await, 1);
    assert_eq!(faults.total(), 2);
}
