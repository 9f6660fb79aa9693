//! A subscriber process for the crash and shutdown tests (`tests/process.rs`): subscribes to `jobs` with the backend
//! the environment names, logs each handler's start and end to `WORKER_LOG`, and on SIGTERM shuts the bus down
//! gracefully (in-flight handlers finish, 10 s at most).

use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::{Message, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    pub n: u64,
}

pub static JOBS: Topic<Job> = Topic::new("jobs", TopicConfig::at_least_once());

fn log(path: &str, line: String) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

#[tokio::main]
async fn main() {
    let path = std::env::var("WORKER_LOG").expect("WORKER_LOG");
    let handle_ms: u64 = std::env::var("WORKER_HANDLE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let bus = tidings::from_env().await.expect("bus from env");
    let config = SubscriptionConfig::default()
        .with_ack_deadline(Duration::from_secs(2))
        .with_max_concurrency(5)
        .with_retry(RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(2)));
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
