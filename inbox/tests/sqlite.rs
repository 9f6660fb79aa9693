//! The inbox on SQLite files, with the in-memory bus.
#![cfg(feature = "sqlite")]

mod support;
#[macro_use]
#[path = "support/cases.rs"]
mod cases;
#[macro_use]
#[path = "support/batch_cases.rs"]
mod batch_cases;

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
inbox_batch_cases!();

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

/// On a SQLite bus with the inbox on the bus's own file, `tidings::sql::publish_in` takes the inbox transaction
/// (`&mut *tx`): the message it publishes commits with the handler's writes, once, and the delivery is acked in the
/// same transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_in_takes_the_inbox_transaction_on_the_bus_database() {
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use tidings_core::{Message, PublishOptions};
    let dir = std::env::temp_dir().join(format!("tidings-inbox-publish-in-{}", support::unique()));
    let path = dir.join("bus.db");
    let backend = tidings::sql::SqlBackend::sqlite(tidings::sql::SqliteConfig::at(path.clone())).await.unwrap();
    let bus = tidings_core::Bus::new(std::sync::Arc::new(backend));
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .busy_timeout(std::time::Duration::from_secs(10));
    let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.unwrap();
    let (orders, shipments) = (support::topic("orders"), support::topic("shipments"));
    let got = std::sync::Arc::new(AtomicU32::new(0));
    let g = got.clone();
    let shipping = bus
        .subscribe(&shipments, "shipping", support::config(3), move |_m: Message<support::Job>| {
            g.fetch_add(1, SeqCst);
            async { Ok(()) }
        })
        .await
        .unwrap();
    let (b, down) = (bus.clone(), tidings_core::Topic::<support::Job>::new(shipments.name(), shipments.config()));
    let sub = Inbox::sqlite(pool.clone())
        .subscribe(&bus, &orders, "billing", support::config(3), move |m: Message<support::Job>, mut tx| {
            let (b, down) = (b.clone(), tidings_core::Topic::<support::Job>::new(down.name(), down.config()));
            async move {
                tidings::sql::publish_in(&b, &mut *tx, &down, &support::Job { n: m.n * 10 }).await?;
                Ok(tx)
            }
        })
        .await
        .unwrap();
    let id = orders.publish(&bus, &support::Job { n: 1 }).await.unwrap();
    assert!(sub.wait_idle(std::time::Duration::from_secs(10)).await.unwrap());
    orders.publish_with(&bus, &support::Job { n: 1 }, PublishOptions::new().id(id)).await.unwrap();
    assert!(sub.wait_idle(std::time::Duration::from_secs(10)).await.unwrap());
    assert!(shipping.wait_idle(std::time::Duration::from_secs(10)).await.unwrap());
    assert_eq!(got.load(SeqCst), 1, "one shipment for the order delivered twice");
    bus.shutdown(std::time::Duration::from_secs(5)).await;
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
