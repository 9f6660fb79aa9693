//! Deliveries per second with 1 and 4 subscriptions and publish-to-handler latency on each dialect, beside a
//! hand-written minimal queue on the same database (INSERT; claim with `UPDATE ... RETURNING` or
//! `FOR UPDATE SKIP LOCKED`; DELETE): the floor for this design. Prints one JSON object per dialect (medians of interleaved rounds).
//!
//! `cargo bench -p tidings-sql --bench throughput [-- --quick]` (PostgreSQL at `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; SQLite in a temporary file).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};
use tidings_sql::{PostgresConfig, SqlBackend, SqliteConfig};

#[derive(Serialize, Deserialize)]
struct Event {
    n: u64,
    text: String,
}

const BATCH: usize = 50;

fn unique() -> String {
    let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    format!("{}{}", d.as_secs(), d.subsec_nanos() % 100_000)
}

fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| tidings_sql::config::DEFAULT_POSTGRES_URL.into())
}

async fn backend(dialect: &str, dir: &std::path::Path, schema: &str) -> SqlBackend {
    match dialect {
        "postgres" => SqlBackend::postgres(PostgresConfig::at(pg_url(), schema)).await.unwrap(),
        _ => SqlBackend::sqlite(SqliteConfig::at(dir.join("bus.db"))).await.unwrap(),
    }
}

/// tidings: `subs` subscriptions, `n` messages published in batches; deliveries/s until all are handled.
async fn tidings_throughput(bus: &Bus, subs: usize, n: u64) -> f64 {
    let topic =
        Topic::<Event>::new(Box::leak(format!("bench-{}", unique()).into_boxed_str()), TopicConfig::at_least_once());
    let done = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for i in 0..subs {
        let d = done.clone();
        let cfg = SubscriptionConfig::default().with_max_concurrency(256);
        handles.push(
            bus.subscribe(&topic, &format!("s{i}"), cfg, move |_m: Message<Event>| {
                d.fetch_add(1, Relaxed);
                async { Ok(()) }
            })
            .await
            .unwrap(),
        );
    }
    let events: Vec<Event> = (0..n).map(|n| Event { n, text: "x".repeat(100) }).collect();
    let start = Instant::now();
    for chunk in events.chunks(BATCH) {
        topic.publish_batch(bus, chunk.iter().map(|e| (e, PublishOptions::new()))).await.unwrap();
    }
    let want = n * subs as u64;
    while done.load(Relaxed) < want {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = want as f64 / start.elapsed().as_secs_f64();
    for h in handles {
        h.shutdown(Duration::from_secs(5)).await;
    }
    rate
}

/// tidings: publish one message at a time, publish-to-handler latency p50/p99 in ms.
async fn tidings_latency(bus: &Bus, n: u64) -> (f64, f64) {
    let topic =
        Topic::<Event>::new(Box::leak(format!("lat-{}", unique()).into_boxed_str()), TopicConfig::at_least_once());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let h = bus
        .subscribe(&topic, "s", SubscriptionConfig::default(), move |m: Message<Event>| {
            let _ = tx.send(SystemTime::now().duration_since(m.meta.publish_time).unwrap_or_default());
            async { Ok(()) }
        })
        .await
        .unwrap();
    let mut lat = Vec::new();
    for i in 0..n {
        topic.publish(bus, &Event { n: i, text: "x".repeat(100) }).await.unwrap();
        lat.push(rx.recv().await.unwrap());
    }
    h.shutdown(Duration::from_secs(5)).await;
    percentiles(lat)
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

/// The hand-written loop on SQLite: one table, one consumer task per subscription.
mod floor_sqlite {
    use super::*;
    use sqlx::SqlitePool;

    pub async fn run(path: &std::path::Path, subs: usize, n: u64) -> f64 {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, sub INTEGER NOT NULL, payload BLOB NOT NULL, visible_at INTEGER NOT NULL)")
            .execute(&pool).await.unwrap();
        sqlx::query("CREATE INDEX IF NOT EXISTS q_sub ON q (sub, id)").execute(&pool).await.unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let want = n * subs as u64;
        let mut consumers = Vec::new();
        for s in 0..subs as i64 {
            let (pool, done) = (pool.clone(), done.clone());
            consumers.push(tokio::spawn(async move {
                while done.load(Relaxed) < want {
                    let now = micros();
                    let ids: Vec<i64> = sqlx::query_scalar(
                        "UPDATE q SET visible_at = $1 WHERE id IN (SELECT id FROM q WHERE sub = $2 AND visible_at <= $3 ORDER BY id LIMIT 256) RETURNING id",
                    )
                    .bind(now + 30_000_000).bind(s).bind(now)
                    .fetch_all(&pool).await.unwrap();
                    if ids.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                    sqlx::query(&format!("DELETE FROM q WHERE id IN ({list})")).execute(&pool).await.unwrap();
                    done.fetch_add(ids.len() as u64, Relaxed);
                }
            }));
        }
        let payload = vec![b'x'; 120];
        let start = Instant::now();
        for chunk in 0..n.div_ceil(BATCH as u64) {
            let mut tx = pool.begin().await.unwrap();
            for _ in 0..BATCH.min((n - chunk * BATCH as u64) as usize) {
                for s in 0..subs as i64 {
                    sqlx::query("INSERT INTO q (sub, payload, visible_at) VALUES ($1, $2, $3)")
                        .bind(s)
                        .bind(&payload)
                        .bind(micros())
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
            }
            tx.commit().await.unwrap();
        }
        for c in consumers {
            c.await.unwrap();
        }
        want as f64 / start.elapsed().as_secs_f64()
    }
}

/// The hand-written loop on PostgreSQL.
mod floor_pg {
    use super::*;
    use sqlx::PgPool;

    pub async fn run(schema: &str, subs: usize, n: u64) -> f64 {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(10).connect(&pg_url()).await.unwrap();
        let t = format!("{schema}.floor_q");
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&pool).await.unwrap();
        sqlx::query(&format!("CREATE TABLE {t} (id BIGSERIAL PRIMARY KEY, sub BIGINT NOT NULL, payload BYTEA NOT NULL, visible_at BIGINT NOT NULL)"))
            .execute(&pool).await.unwrap();
        sqlx::query(&format!("CREATE INDEX ON {t} (sub, id)")).execute(&pool).await.unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let want = n * subs as u64;
        let mut consumers = Vec::new();
        for s in 0..subs as i64 {
            let (pool, done, t): (PgPool, _, String) = (pool.clone(), done.clone(), t.clone());
            consumers.push(tokio::spawn(async move {
                let claim = format!("UPDATE {t} SET visible_at = $1 WHERE id IN (SELECT id FROM {t} WHERE sub = $2 AND visible_at <= $3 ORDER BY id LIMIT 256 FOR UPDATE SKIP LOCKED) RETURNING id");
                let delete = format!("DELETE FROM {t} WHERE id = ANY($1)");
                while done.load(Relaxed) < want {
                    let now = micros();
                    let ids: Vec<i64> = sqlx::query_scalar(&claim).bind(now + 30_000_000).bind(s).bind(now)
                        .fetch_all(&pool).await.unwrap();
                    if ids.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    sqlx::query(&delete).bind(&ids).execute(&pool).await.unwrap();
                    done.fetch_add(ids.len() as u64, Relaxed);
                }
            }));
        }
        let payload = vec![b'x'; 120];
        let insert = format!("INSERT INTO {t} (sub, payload, visible_at) VALUES ($1, $2, $3)");
        let start = Instant::now();
        for chunk in 0..n.div_ceil(BATCH as u64) {
            let mut tx = pool.begin().await.unwrap();
            for _ in 0..BATCH.min((n - chunk * BATCH as u64) as usize) {
                for s in 0..subs as i64 {
                    sqlx::query(&insert).bind(s).bind(&payload).bind(micros()).execute(&mut *tx).await.unwrap();
                }
            }
            tx.commit().await.unwrap();
        }
        for c in consumers {
            c.await.unwrap();
        }
        want as f64 / start.elapsed().as_secs_f64()
    }
}

fn micros() -> i64 {
    tidings_core::backend::time::micros(SystemTime::now())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: u64 = if quick { 2_000 } else { 10_000 };
    // Interleaved rounds (tidings and the floor take turns, the first to go alternating), medians reported: the
    // machine's speed drifts between runs.
    let rounds = if quick { 3 } else { 5 };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        for dialect in ["sqlite", "postgres"] {
            let dir = std::env::temp_dir().join(format!("tidings-sql-bench-{}", unique()));
            std::fs::create_dir_all(&dir).unwrap();
            let schema = format!("tidings_bench_{}", unique());
            let bus = Bus::new(Arc::new(backend(dialect, &dir, &schema).await));
            let mut fields = Vec::new();
            for subs in [1usize, 4] {
                let (mut ours, mut floors, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
                for round in 0..rounds {
                    let mut pair = [0.0f64; 2];
                    for side in [round % 2, 1 - round % 2] {
                        pair[side] = if side == 0 {
                            tidings_throughput(&bus, subs, n).await
                        } else {
                            let floor = match dialect {
                                "postgres" => floor_pg::run(&schema, subs, n).await,
                                _ => floor_sqlite::run(&dir.join("floor.db"), subs, n).await,
                            };
                            if dialect == "postgres" {
                                let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
                                sqlx::query(&format!("DROP TABLE {schema}.floor_q")).execute(&pool).await.unwrap();
                            } else {
                                let _ = std::fs::remove_file(dir.join("floor.db"));
                            }
                            floor
                        };
                    }
                    eprintln!("{dialect} subs={subs} round {round}: tidings {:.0}/s, floor {:.0}/s", pair[0], pair[1]);
                    ours.push(pair[0]);
                    floors.push(pair[1]);
                    ratios.push(pair[0] / pair[1]);
                }
                fields.push(format!(
                    "\"subs{subs}_tidings_deliveries_per_s\":{:.0},\"subs{subs}_floor_deliveries_per_s\":{:.0},\
                     \"subs{subs}_vs_floor\":{:.2}",
                    median(ours),
                    median(floors),
                    median(ratios)
                ));
            }
            let (p50, p99) = tidings_latency(&bus, if quick { 100 } else { 500 }).await;
            println!(
                "{{\"bench\":\"sql_{dialect}\",\"messages\":{n},\"rounds\":{rounds},{},\"p50_ms\":{p50:.2},\
                 \"p99_ms\":{p99:.2}}}",
                fields.join(",")
            );
            bus.shutdown(Duration::from_secs(5)).await;
            if dialect == "postgres" {
                let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
                sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&pool).await.unwrap();
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
}
