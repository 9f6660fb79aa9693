//! Outbox figures: rows relayed per second (PostgreSQL with 1 and 2 relays, SQLite) and commit-to-handler latency
//! (PostgreSQL woken by NOTIFY, SQLite by polling). Prints one JSON object per figure.
//!
//! Run: `cargo bench -p tidings-outbox --bench relay` (PostgreSQL at DATABASE_URL, default
//! postgres://postgres@127.0.0.1:5432/test). `-- --quick` uses fewer rows.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tidings_core::{Bus, Message, SubscriptionConfig, Topic, TopicConfig};
use tidings_local::LocalBackend;
use tidings_outbox::Outbox;

#[derive(Serialize, Deserialize)]
struct Event {
    n: u64,
    email: String,
}

fn topic(base: &str) -> Topic<Event> {
    let id = uuid::Uuid::now_v7().simple().to_string();
    Topic::new(Box::leak(format!("{base}-{}", &id[20..]).into_boxed_str()), TopicConfig::at_least_once())
}

/// A bus with one subscription on `t` that counts deliveries and records when each `n` arrived.
async fn bus_with_counter(t: &Topic<Event>) -> (Bus, Arc<AtomicU64>, Arc<Mutex<HashMap<u64, Instant>>>) {
    let bus = Bus::new(Arc::new(LocalBackend::new()));
    let (count, seen) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(HashMap::new())));
    let (c, s) = (count.clone(), seen.clone());
    bus.subscribe(t, "bench", SubscriptionConfig::default(), move |m: Message<Event>| {
        s.lock().unwrap().insert(m.n, Instant::now());
        c.fetch_add(1, SeqCst);
        async { Ok(()) }
    })
    .await
    .unwrap();
    (bus, count, seen)
}

macro_rules! throughput {
    ($name:expr, $outbox:expr, $t:expr, $count:expr, $rows:expr, $relays:expr) => {{
        let (outbox, t, count, rows): (_, &Topic<Event>, Arc<AtomicU64>, u64) = ($outbox, $t, $count, $rows);
        for chunk in 0..rows / 500 {
            let mut tx = outbox.pool().begin().await.unwrap();
            for i in 0..500 {
                let n = chunk * 500 + i;
                outbox.publish(&mut tx, t, &Event { n, email: format!("user{n}@example.com") }).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
        let start = Instant::now();
        let handles: Vec<_> = (0..$relays).map(|_| outbox.relay().batch_size(500).spawn()).collect();
        while count.load(SeqCst) < rows {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        for h in handles {
            h.shutdown().await;
        }
        println!(
            "{{\"bench\":\"{}\",\"rows\":{rows},\"relays\":{},\"rows_relayed_per_s\":{:.0}}}",
            $name,
            $relays,
            rows as f64 / secs
        );
    }};
}

macro_rules! latency {
    ($name:expr, $outbox:expr, $t:expr, $seen:expr, $n:expr) => {{
        let (outbox, t, seen, n): (_, &Topic<Event>, Arc<Mutex<HashMap<u64, Instant>>>, u64) = ($outbox, $t, $seen, $n);
        let mut committed = HashMap::new();
        for i in 0..n {
            let mut tx = outbox.pool().begin().await.unwrap();
            outbox.publish(&mut tx, t, &Event { n: i, email: "a@example.com".into() }).await.unwrap();
            tx.commit().await.unwrap();
            committed.insert(i, Instant::now());
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        while seen.lock().unwrap().len() < n as usize {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seen = seen.lock().unwrap();
        let mut us: Vec<u128> = (0..n).map(|i| seen[&i].saturating_duration_since(committed[&i]).as_micros()).collect();
        us.sort();
        let p = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
        println!(
            "{{\"bench\":\"{}\",\"messages\":{n},\"commit_to_handler_p50_us\":{},\"commit_to_handler_p99_us\":{}}}",
            $name,
            p(0.50),
            p(0.99)
        );
    }};
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rows: u64 = if quick { 5_000 } else { 20_000 };
    let lat_n: u64 = if quick { 200 } else { 1_000 };
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pg = PgPoolOptions::new().max_connections(8).connect(&url).await.expect("PostgreSQL at DATABASE_URL");

    for relays in [1, 2] {
        let t = topic("pg-tput");
        let (bus, count, _) = bus_with_counter(&t).await;
        let table = format!("bench_outbox_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let outbox = Outbox::new(pg.clone(), bus).with_table(&table).unwrap();
        outbox.migrate().await.unwrap();
        throughput!("outbox_postgres_relay", &outbox, &t, count, rows, relays);
        sqlx::query(&format!("DROP TABLE {table}")).execute(&pg).await.unwrap();
    }
    {
        let t = topic("pg-lat");
        let (bus, _, seen) = bus_with_counter(&t).await;
        let table = format!("bench_outbox_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let outbox = Outbox::new(pg.clone(), bus).with_table(&table).unwrap();
        outbox.migrate().await.unwrap();
        // Polling only every 10 minutes: every delivery below was woken by NOTIFY.
        let relay = outbox.relay().poll_interval(Duration::from_secs(600)).spawn();
        tokio::time::sleep(Duration::from_millis(200)).await;
        latency!("outbox_postgres_notify_latency", &outbox, &t, seen, lat_n);
        relay.shutdown().await;
        sqlx::query(&format!("DROP TABLE {table}")).execute(&pg).await.unwrap();
    }

    let path = std::env::temp_dir().join(format!("tidings-outbox-bench-{}.db", std::process::id()));
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let lite = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.unwrap();
    {
        let t = topic("lite-tput");
        let (bus, count, _) = bus_with_counter(&t).await;
        let outbox = Outbox::new(lite.clone(), bus).with_table("bench_tput").unwrap();
        outbox.migrate().await.unwrap();
        throughput!("outbox_sqlite_relay", &outbox, &t, count, rows, 1);
    }
    {
        let t = topic("lite-lat");
        let (bus, _, seen) = bus_with_counter(&t).await;
        let outbox = Outbox::new(lite.clone(), bus).with_table("bench_lat").unwrap();
        outbox.migrate().await.unwrap();
        let relay = outbox.relay().spawn();
        tokio::time::sleep(Duration::from_millis(200)).await;
        latency!("outbox_sqlite_poll_latency", &outbox, &t, seen, lat_n);
        relay.shutdown().await;
    }
    lite.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
