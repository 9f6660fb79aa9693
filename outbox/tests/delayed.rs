//! A delayed outbox message relayed to real buses: NATS JetStream on 127.0.0.1:4222 (no native delay: the due time
//! travels in the `tidings-deliver-at` attribute and the subscriber's runtime holds the message) and the SQLite
//! backend (native: the delivery row's `visible_at`). The outbox is a SQLite file of its own, as an application's
//! database is.
#![cfg(feature = "sqlite")]

mod support;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::Row;
use support::{eventually, Event};
use tidings_core::backend::time::micros_ceil;
use tidings_core::backend::wire::DELIVER_AT_ATTRIBUTE;
use tidings_core::{Bus, Message, PublishOptions, SubscriptionConfig, TopicConfig};
use tidings_outbox::Outbox;

async fn outbox(bus: Bus) -> Outbox<sqlx::Sqlite> {
    let path = std::env::temp_dir().join(format!("tidings-outbox-delayed-{}.db", support::unique()));
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.unwrap();
    let outbox = Outbox::new(pool, bus);
    outbox.migrate().await.unwrap();
    outbox
}

/// Writes a message due in 3 s through the outbox of `bus` with a relay running, and checks the row (the due time in
/// its column, not in its attributes: the relay's bus carries it) and that the subscriber gets it once, no earlier
/// than due, as its first attempt. On NATS that means the relay's publish carried the due time in the attribute
/// the subscriber's runtime holds by: without it the message would be delivered at once.
async fn held_until_due(bus: Bus, native: bool) {
    assert_eq!(bus.native_capabilities().delay, native, "the bus under test keeps delays natively: {native}");
    let t = support::topic::<Event>("outbox-delayed", TopicConfig::at_least_once());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let sub = bus
        .subscribe(&t, "sub", SubscriptionConfig::default(), move |m: Message<Event>| {
            s.lock().unwrap().push((m.n, m.attempt(), SystemTime::now()));
            async { Ok(()) }
        })
        .await
        .unwrap();
    let outbox = outbox(bus.clone()).await;
    let relay = outbox.relay().spawn();
    let due = SystemTime::now() + Duration::from_secs(3);
    let mut tx = outbox.pool().begin().await.unwrap();
    outbox.publish_with(&mut tx, &t, &Event { n: 1 }, PublishOptions::new().deliver_at(due)).await.unwrap();
    let row = sqlx::query(&format!("SELECT deliver_at, attributes FROM {}", outbox.table()))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        row.get::<Option<i64>, _>("deliver_at"),
        Some(micros_ceil(due)),
        "the row keeps the due time (rounded up to the microsecond, never early)"
    );
    let attributes: String = row.get("attributes");
    assert!(!attributes.contains(DELIVER_AT_ATTRIBUTE), "the row's attributes: {attributes}");

    assert!(eventually(20, || relay.relayed() == 1).await, "the relay published the row");
    assert!(eventually(30, || !seen.lock().unwrap().is_empty()).await, "delivered once due");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "delivered once: {seen:?}");
    let (n, attempt, handled) = seen[0];
    assert_eq!((n, attempt), (1, 1), "its first attempt, however long it was held");
    assert!(handled >= due, "handled {:?} before its due time", due.duration_since(handled).unwrap_or_default());
    relay.shutdown().await;
    drop(sub);
    bus.shutdown(Duration::from_secs(5)).await;
    outbox.pool().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_holds_a_delayed_outbox_message_until_due() {
    let url = std::env::var("TIDINGS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut config = tidings_nats::NatsConfig::default();
    config.url = Some(url.clone());
    config.wait_time = Duration::from_secs(1);
    let backend = tidings_nats::NatsBackend::new(config).await.unwrap_or_else(|e| {
        panic!("this test needs a NATS server with JetStream at {url} (scripts/nats-server start): {e}")
    });
    held_until_due(Bus::new(Arc::new(backend)), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_bus_keeps_a_delayed_outbox_message_until_due() {
    let dir = std::env::temp_dir().join(format!("tidings-outbox-delayed-bus-{}", support::unique()));
    let backend = tidings_sql::SqlBackend::sqlite(tidings_sql::SqliteConfig::at(dir.join("bus.db"))).await.unwrap();
    held_until_due(Bus::new(Arc::new(backend)), true).await;
    let _ = std::fs::remove_dir_all(dir);
}
