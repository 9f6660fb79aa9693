//! A subscriber process for the crash and shutdown tests (`tests/process.rs`): subscribes to `jobs` with the backend
//! the environment names, logs each handler's start and end to `WORKER_LOG`, and on SIGTERM shuts the bus down
//! gracefully (in-flight handlers finish, 10 s at most).
//!
//! With `WORKER_INBOX` (a `sqlite://` or `postgres://` URL) it subscribes through the transactional inbox instead,
//! on the table `WORKER_INBOX_TABLE`: each handler records its job in `WORKER_EFFECTS` (the testkit's effects table)
//! inside the inbox transaction, and every ack is lost on its way to the backend (the testkit's `InboxFaults`), so
//! each job it committed is unacked when the test kills it.

use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::inbox::Inbox;
use tidings::{Message, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};
use tidings_testkit::conformance::inbox::{InboxFaults, TestDatabase};

#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    pub n: u64,
}

pub static JOBS: Topic<Job> = Topic::new("jobs", TopicConfig::at_least_once());

fn log(path: &str, line: String) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

fn config() -> SubscriptionConfig {
    SubscriptionConfig::default()
        .with_ack_deadline(Duration::from_secs(2))
        .with_max_concurrency(5)
        .with_retry(RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(2)))
}

/// Subscribes `jobs` through an inbox on `pool`'s database; every ack is lost.
async fn inbox_worker<DB: TestDatabase>(bus: tidings::Bus, inbox: Inbox<DB>, path: String, handle_ms: u64) {
    let effects = std::env::var("WORKER_EFFECTS").expect("WORKER_EFFECTS");
    let faults: Arc<InboxFaults> = Arc::default();
    faults.lose_every_nth_ack.store(1, std::sync::atomic::Ordering::SeqCst);
    let bus = faults.on(&bus);
    inbox
        .subscribe(&bus, &JOBS, "worker", config(), move |m: Message<Job>, mut tx| {
            let (p, effects) = (path.clone(), effects.clone());
            async move {
                log(&p, format!("start {} {}", m.n, m.attempt()));
                DB::record(&mut tx, &effects, "worker", m.n, m.id().as_str()).await?;
                tokio::time::sleep(Duration::from_millis(handle_ms)).await;
                Ok(tx) // committed by the inbox; its ack is then lost
            }
        })
        .await
        .expect("subscribe through the inbox");
    println!("ready");
    std::future::pending::<()>().await; // until SIGKILL
}

#[tokio::main]
async fn main() {
    let path = std::env::var("WORKER_LOG").expect("WORKER_LOG");
    let handle_ms: u64 = std::env::var("WORKER_HANDLE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let bus = tidings::from_env().await.expect("bus from env");
    if let Ok(url) = std::env::var("WORKER_INBOX") {
        let table = std::env::var("WORKER_INBOX_TABLE").expect("WORKER_INBOX_TABLE");
        if url.starts_with("sqlite:") {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                .expect("a SQLite URL")
                .busy_timeout(Duration::from_secs(30));
            let pool = sqlx::SqlitePool::connect_with(opts).await.expect("the inbox's SQLite database");
            let inbox = Inbox::sqlite(pool).with_table(&table).unwrap();
            return inbox_worker(bus, inbox, path, handle_ms).await;
        }
        let pool = sqlx::PgPool::connect(&url).await.expect("the inbox's PostgreSQL database");
        let inbox = Inbox::postgres(pool).with_table(&table).unwrap();
        return inbox_worker(bus, inbox, path, handle_ms).await;
    }
    let config = config();
    let p = path.clone();
    bus.subscribe(&JOBS, "worker", config, move |m: Message<Job>| {
        let p = p.clone();
        async move {
            log(&p, format!("start {} {}", m.n, m.attempt()));
            tokio::time::sleep(Duration::from_millis(handle_ms)).await;
            log(&p, format!("done {}", m.n));
            Ok(())
        }
    })
    .await
    .expect("subscribe");
    println!("ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    term.recv().await;
    log(&path, "sigterm".into());
    bus.shutdown(Duration::from_secs(10)).await;
    log(&path, "shutdown complete".into());
}
