//! The outbox against a real PostgreSQL, found through `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`).
#![cfg(feature = "postgres")]

mod support;
#[macro_use]
#[path = "support/cases.rs"]
mod cases;

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use tidings_outbox::Outbox;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn pool() -> PgPool {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    match PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10)).connect(&url).await {
        Ok(p) => p,
        Err(e) => panic!(
            "the outbox tests need PostgreSQL at DATABASE_URL={url} ({e}). Start one, e.g. \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (trust auth, database `test`), \
             or point DATABASE_URL at another server"
        ),
    }
}

async fn setup() -> (Outbox<sqlx::Postgres>, std::sync::Arc<support::Faults>, String) {
    let pool = pool().await;
    let (bus, faults) = support::bus();
    let suffix = support::unique();
    let outbox = Outbox::new(pool.clone(), bus).with_table(&format!("outbox_{suffix}")).unwrap();
    outbox.migrate().await.unwrap();
    outbox.migrate().await.expect("a second migrate finds the table and index and does nothing");
    let index: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("outbox_{suffix}_topic_seq"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(index, "migrate creates the (topic, seq) index");
    let users = format!("users_{suffix}");
    sqlx::query(&format!("CREATE TABLE {users} (id BIGINT PRIMARY KEY)")).execute(&pool).await.unwrap();
    (outbox, faults, users)
}

async fn rows(outbox: &Outbox<sqlx::Postgres>) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {}", outbox.table())).fetch_one(outbox.pool()).await.unwrap()
}

/// The first bind parameter in this database's SQL.
const PARAM: &str = "$1";

/// A copy of `outbox`'s table under a new name, empty, as tidings-outbox 0.1 created it (no `deliver_at`).
async fn v0_1_table(outbox: &Outbox<sqlx::Postgres>) -> Outbox<sqlx::Postgres> {
    let old = outbox.clone().with_table(&format!("old_{}", support::unique())).unwrap();
    let t = old.table();
    for sql in [
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (seq BIGSERIAL PRIMARY KEY, topic TEXT NOT NULL, \
             exactly_once BOOLEAN NOT NULL, ordered BOOLEAN NOT NULL, message_id TEXT NOT NULL, \
             payload BYTEA NOT NULL, attributes TEXT NOT NULL, ordering_key TEXT, created_at BIGINT NOT NULL)"
        ),
        format!("CREATE INDEX IF NOT EXISTS {t}_topic_seq ON {t} (topic, seq)"),
    ] {
        sqlx::query(&sql).execute(old.pool()).await.unwrap();
    }
    old
}

fn relay_count() -> usize {
    2
}

outbox_cases!();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_every_row_once_and_share_the_work() {
    let (outbox, faults, _users) = setup().await;
    let topics: Vec<_> = (0..8)
        .map(|i| support::topic::<support::Event>(&format!("share{i}"), tidings_core::TopicConfig::at_least_once()))
        .collect();
    let mut ids = Vec::new();
    for t in &topics {
        let mut tx = outbox.pool().begin().await.unwrap();
        for n in 0..250 {
            ids.push(outbox.publish(&mut tx, t, &support::Event { n }).await.unwrap().to_string());
        }
        tx.commit().await.unwrap();
    }
    let a = outbox.relay().batch_size(25).spawn();
    let b = outbox.relay().batch_size(25).spawn();
    assert!(support::eventually(60, || faults.total() >= 2000).await, "all rows relayed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut accepted: Vec<String> = topics.iter().flat_map(|t| faults.accepted(t.name())).collect();
    assert_eq!(accepted.len(), 2000, "no row published twice in steady state");
    accepted.sort();
    ids.sort();
    assert_eq!(accepted, ids, "every row published, none lost");
    assert!(a.relayed() > 0 && b.relayed() > 0, "both relays worked: {} and {}", a.relayed(), b.relayed());
    assert_eq!(rows(&outbox).await, 0);
    let (ra, rb) = (a.relayed(), b.relayed());
    assert_eq!(a.shutdown().await + b.shutdown().await, ra + rb, "shutdown returns each relay's final count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_an_idle_relay_without_polling() {
    let (outbox, faults, _users) = setup().await;
    let t = support::topic::<support::Event>("notify", tidings_core::TopicConfig::at_least_once());
    let relay = outbox.relay().poll_interval(Duration::from_secs(600)).spawn();
    tokio::time::sleep(Duration::from_millis(300)).await; // the relay has looked, found nothing, and is waiting
    let mut tx = outbox.pool().begin().await.unwrap();
    outbox.publish(&mut tx, &t, &support::Event { n: 1 }).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        support::eventually(10, || faults.total() == 1).await,
        "NOTIFY woke the relay (its poll interval is 10 min)"
    );
    relay.shutdown().await;
}
