//! Batch handlers (`Bus::subscribe_batch`) beside single handlers: deliveries per second, and the backend's API calls
//! per 1,000 messages (`Bus::api_calls`, where the backend counts them).
//!
//! `tidings-bench batch_throughput [--quick] [--messages N] [--backends local,sqlite,...] [--rounds R]`: per backend
//! (default: local, sqlite, postgres, nats, aws, gcp), N messages (local 100,000, the others 10,000; `--quick` a
//! tenth) wait in a subscription that is stopped, then the subscription starts again with a handler that only counts
//! and is timed until it has them all: `single` (`subscribe`, the default `max_concurrency` 100) and `batch`
//! (`subscribe_batch`, batches of `max_messages` 100, `max_wait` 1 s, `max_concurrency` 100 batches), each round once
//! in turn, R rounds (3; the cloud emulators 1): deliveries/s is the median, calls per 1,000 messages are the
//! consumption's (receive, settle, lease extension), from the same rounds. Prints one line per backend,
//! `batch_throughput_<backend>`, with the date, the machine and how busy its CPUs were over the backend's rounds
//! (`cpu_busy_pct`: everything on it, the broker and other work included). AWS is LocalStack (`AWS_ENDPOINT_URL`), GCP
//! the emulator (`PUBSUB_EMULATOR_HOST`): their deliveries/s say nothing about the clouds'.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_core::{BatchOutcome, Bus, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};

use crate::util::{event, Event};

fn name(base: &str) -> &'static str {
    let id = uuid::Uuid::now_v7().simple().to_string();
    Box::leak(format!("{base}-{}", &id[id.len() - 10..]).into_boxed_str())
}

fn var(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.into())
}

/// A bus on `backend` (and a schema or directory to drop afterwards).
async fn bus(backend: &str) -> (Bus, Option<String>) {
    use tidings_sql::{PostgresConfig, SqlBackend, SqliteConfig};
    let fail = |e: tidings_core::Error| -> ! { panic!("batch_throughput: {backend}: {e}") };
    let b: Arc<dyn tidings_core::Backend> = match backend {
        "local" => Arc::new(tidings_local::LocalBackend::new()),
        "sqlite" => {
            let dir = std::env::temp_dir().join(name("tidings-bench-batch"));
            let b = SqlBackend::sqlite(SqliteConfig::at(dir.join("bus.db"))).await.unwrap_or_else(|e| fail(e));
            return (Bus::new(Arc::new(b)), Some(dir.display().to_string()));
        }
        "postgres" => {
            let schema = name("tidings_bench_batch").replace('-', "_");
            let url = var("DATABASE_URL", tidings_sql::config::DEFAULT_POSTGRES_URL);
            let b = SqlBackend::postgres(PostgresConfig::at(url, schema.clone())).await.unwrap_or_else(|e| fail(e));
            return (Bus::new(Arc::new(b)), Some(schema));
        }
        "nats" => {
            let mut c = tidings_nats::NatsConfig::default();
            c.url = Some(var("NATS_URL", "nats://127.0.0.1:4222"));
            Arc::new(tidings_nats::NatsBackend::new(c).await.unwrap_or_else(|e| fail(e)))
        }
        "aws" => {
            let mut c = tidings_aws::AwsConfig::default();
            c.region = Some(var("AWS_REGION", "us-east-1"));
            c.endpoint_url = Some(var("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"));
            Arc::new(tidings_aws::AwsBackend::new(c).await.unwrap_or_else(|e| fail(e)))
        }
        "gcp" => {
            let mut c = tidings_gcp::GcpConfig::default();
            c.project_id = Some(var("PUBSUB_PROJECT_ID", "tidings-test"));
            c.endpoint = Some(format!("http://{}", var("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")));
            Arc::new(tidings_gcp::GcpBackend::new(c).await.unwrap_or_else(|e| fail(e)))
        }
        other => panic!("batch_throughput: unknown backend {other:?}"),
    };
    (Bus::new(b), None)
}

/// Drops what a SQL bus left: the PostgreSQL schema, or the SQLite directory.
async fn clean(backend: &str, leftover: Option<String>) {
    match (backend, leftover) {
        ("postgres", Some(schema)) => {
            let url = var("DATABASE_URL", tidings_sql::config::DEFAULT_POSTGRES_URL);
            if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await;
                pool.close().await;
            }
        }
        (_, Some(dir)) => {
            let _ = std::fs::remove_dir_all(dir);
        }
        _ => {}
    }
}

/// What one timed consumption measured: deliveries/s, and the backend's calls by operation meanwhile.
struct Round {
    rate: f64,
    calls: BTreeMap<&'static str, u64>,
}

/// `n` messages wait in a stopped subscription of a fresh topic; the subscription starts again (`batch`: with a batch
/// handler) and is timed until its handler has counted all of them.
async fn round(bus: &Bus, n: u64, batch: bool) -> Round {
    let topic = Topic::<Event>::new(name("bench-batch"), TopicConfig::at_least_once());
    let config = SubscriptionConfig::default().with_max_messages(100);
    let done = Arc::new(AtomicU64::new(0));
    // The subscription exists, stopped: what is published now waits for it.
    let idle = bus.subscribe(&topic, "sink", config, |_m: Message<Event>| async { Ok(()) }).await.unwrap();
    idle.shutdown(Duration::from_secs(5)).await;
    let events: Vec<Event> = (0..n).map(event).collect();
    for chunk in events.chunks(500) {
        topic.publish_batch(bus, chunk.iter().map(|e| (e, PublishOptions::new()))).await.expect("publish");
    }
    let before = bus.api_calls().map(|c| c.snapshot()).unwrap_or_default();
    let start = Instant::now();
    let d = done.clone();
    let sub = if batch {
        let handler = move |batch: Vec<Message<Event>>| {
            d.fetch_add(batch.len() as u64, Relaxed);
            std::future::ready(Ok(BatchOutcome::AckAll))
        };
        bus.subscribe_batch(&topic, "sink", config, handler).await.unwrap()
    } else {
        let handler = move |_m: Message<Event>| {
            d.fetch_add(1, Relaxed);
            std::future::ready(Ok(()))
        };
        bus.subscribe(&topic, "sink", config, handler).await.unwrap()
    };
    let deadline = start + Duration::from_secs(600);
    while done.load(Relaxed) < n {
        assert!(Instant::now() < deadline, "batch_throughput: {} of {n} handled in 10 minutes", done.load(Relaxed));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    // The last acks: settled before the subscription stops.
    sub.shutdown(Duration::from_secs(30)).await;
    let after = bus.api_calls().map(|c| c.snapshot()).unwrap_or_default();
    let calls = after.iter().map(|(op, &v)| (*op, v - before.get(op).copied().unwrap_or(0))).filter(|(_, v)| *v > 0);
    Round { rate, calls: calls.collect() }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The consumption's calls per 1,000 messages, by operation (publishing excluded), over `rounds`.
fn per_1k(rounds: &[Round], n: u64) -> BTreeMap<String, f64> {
    let mut sum: BTreeMap<String, f64> = BTreeMap::new();
    for r in rounds {
        for (op, v) in &r.calls {
            if op.contains("Publish") || op.contains("publish") {
                continue;
            }
            *sum.entry(op.to_string()).or_default() += *v as f64;
        }
    }
    let total = (n * rounds.len() as u64) as f64;
    sum.into_iter().map(|(op, v)| (op, (v * 1000.0 / total * 10.0).round() / 10.0)).collect()
}

pub async fn throughput(args: &[String], quick: bool) -> String {
    let backends: Vec<String> = match args.iter().position(|a| a == "--backends") {
        Some(i) => args.get(i + 1).map(|v| v.split(',').map(str::to_string).collect()).unwrap_or_default(),
        None => ["local", "sqlite", "postgres", "nats", "aws", "gcp"].map(String::from).to_vec(),
    };
    let mut lines = Vec::new();
    for backend in &backends {
        let cloud = backend == "aws" || backend == "gcp";
        let base = if backend == "local" { 100_000 } else { 10_000 };
        let n = crate::util::arg(args, "--messages").unwrap_or(if quick { base / 10 } else { base });
        let rounds = crate::util::arg(args, "--rounds").unwrap_or(if cloud { 1 } else { 3 }) as usize;
        let (bus, leftover) = bus(backend).await;
        let (mut single, mut batch) = (Vec::new(), Vec::new());
        let ticks = crate::delay::machine_ticks();
        for r in 0..rounds {
            eprintln!("batch_throughput: {backend} round {}/{rounds}", r + 1);
            single.push(round(&bus, n, false).await);
            batch.push(round(&bus, n, true).await);
        }
        let busy = {
            let (b, t) = crate::delay::machine_ticks();
            ((b - ticks.0) as f64 * 100.0 / (t - ticks.1).max(1) as f64).round()
        };
        bus.shutdown(Duration::from_secs(5)).await;
        clean(backend, leftover).await;
        let (s, b) = (median(single.iter().map(|r| r.rate).collect()), median(batch.iter().map(|r| r.rate).collect()));
        let (calls_single, calls_batch) = (per_1k(&single, n), per_1k(&batch, n));
        let total = |c: &BTreeMap<String, f64>| (c.values().sum::<f64>() * 10.0).round() / 10.0;
        let mut line = serde_json::json!({
            "bench": format!("batch_throughput_{backend}"),
            "messages": n,
            "rounds": rounds,
            "max_messages": 100,
            "single_msgs_per_s": s.round(),
            "batch_msgs_per_s": b.round(),
            "batch_vs_single": (b / s * 100.0).round() / 100.0,
            "date": crate::delay::today(),
            "machine": crate::delay::machine(),
            "cpu_busy_pct": busy,
        });
        if bus.api_calls().is_some() {
            line["single_calls_per_1k"] = serde_json::json!(total(&calls_single));
            line["batch_calls_per_1k"] = serde_json::json!(total(&calls_batch));
            line["single_calls_per_1k_by_operation"] = serde_json::json!(calls_single);
            line["batch_calls_per_1k_by_operation"] = serde_json::json!(calls_batch);
        }
        if cloud {
            line["note"] =
                serde_json::json!("an emulator on the same 2 cores; deliveries/s say nothing about the cloud");
        }
        lines.push(line.to_string());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    /// The bench still builds and runs, on a tiny input (the figures are not checked: timings are noisy).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_throughput_runs_on_the_in_memory_bus() {
        let args = ["--backends", "local", "--messages", "1000", "--rounds", "1"].map(String::from);
        let line = super::throughput(&args, false).await;
        let d: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        assert_eq!(d["bench"], "batch_throughput_local");
        assert!(d["single_msgs_per_s"].as_f64().unwrap() > 0.0 && d["batch_msgs_per_s"].as_f64().unwrap() > 0.0);
    }
}
