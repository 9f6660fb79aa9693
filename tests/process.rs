//! Process-level reliability against LocalStack, the Pub/Sub emulator, a NATS server, a SQLite file and PostgreSQL
//! (which keep the state): a subscriber process
//! killed with SIGKILL in the middle of handlers loses nothing (another consumer gets the messages after the ack
//! deadline), and one stopped with SIGTERM finishes its in-flight handlers, acks them once, and loses nothing. Through
//! the transactional inbox, one killed after its commits and before its acks has each job's effect exactly once.
#![cfg(feature = "test-worker")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

mod common;
use tidings::{Handler, Message, Settings, SubscriptionConfig, Topic, TopicConfig};
use tidings_testkit::conformance::inbox::{postgres_url, TestDatabase};

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u64,
}

static JOBS: Topic<Job> = Topic::new("jobs", TopicConfig::at_least_once());
const COUNT: u64 = 20;

fn backend_env(run: &Run) -> Vec<(String, String)> {
    let mut v = vec![("TIDINGS_BACKEND".to_string(), run.backend.to_string())];
    let sqlite_path = run.sqlite_path();
    let pairs: &[(&str, &str)] = match run.backend {
        "aws" => &[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
        "nats" => &[("NATS_URL", "nats://127.0.0.1:4222")],
        "sqlite" => &[("TIDINGS_SQLITE__PATH", &sqlite_path)],
        // The machine's server (DATABASE_URL or the default), schema `tidings`; the name prefix keeps runs apart.
        "postgres" => &[],
        _ => &[("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"), ("PUBSUB_PROJECT_ID", "tidings-test")],
    };
    v.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    v
}

struct Run {
    backend: &'static str,
    prefix: String,
    log: std::path::PathBuf,
}

impl Run {
    fn new(backend: &'static str) -> Self {
        let id = uuid_like();
        let log = std::env::temp_dir().join(format!("tidings-worker-{id}.log"));
        Run { backend, prefix: format!("p{id}-"), log }
    }

    /// The database file of a SQLite run (one per run, under the system temp dir).
    fn sqlite_path(&self) -> String {
        std::env::temp_dir().join(format!("tidings-process-{}.db", self.prefix)).display().to_string()
    }

    fn settings(&self) -> Settings {
        let mut vars: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        vars.insert("TIDINGS_BACKEND".into(), self.backend.into());
        vars.insert("TIDINGS_NAME_PREFIX".into(), self.prefix.clone());
        match self.backend {
            "aws" => {
                vars.insert("TIDINGS_AWS__ENDPOINT_URL".into(), "http://127.0.0.1:4566".into());
                vars.insert("TIDINGS_AWS__REGION".into(), "us-east-1".into());
            }
            "sqlite" => {
                vars.insert("TIDINGS_SQLITE__PATH".into(), self.sqlite_path());
            }
            "postgres" => {}
            "nats" => {
                vars.insert("TIDINGS_NATS__URL".into(), "nats://127.0.0.1:4222".into());
            }
            _ => {
                vars.insert("TIDINGS_GCP__ENDPOINT".into(), "http://127.0.0.1:8085".into());
                vars.insert("TIDINGS_GCP__PROJECT_ID".into(), "tidings-test".into());
            }
        }
        Settings::load(vars).unwrap()
    }

    /// A bus in this process on the same backend and names as the worker (explicit test credentials for AWS).
    async fn bus(&self) -> tidings::Bus {
        if self.backend != "aws" {
            return tidings::from_settings(self.settings()).await.unwrap();
        }
        let sdk = common::localstack_sdk().await;
        let backend = tidings::aws::AwsBackend::with_sdk_config(&sdk, tidings::aws::AwsConfig::default()).unwrap();
        tidings::Bus::builder(std::sync::Arc::new(backend)).settings(self.settings()).build()
    }

    fn start_worker(&self) -> Child {
        self.start_worker_with(&[])
    }

    /// The worker, with more environment variables (later ones win).
    fn start_worker_with(&self, env: &[(&str, &str)]) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidings-test-worker"));
        cmd.envs(backend_env(self))
            .env("TIDINGS_NAME_PREFIX", &self.prefix)
            .env("WORKER_LOG", &self.log)
            .env("WORKER_HANDLE_MS", "1500")
            .envs(env.iter().copied())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("worker starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the worker subscribed");
        child
    }

    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_string).collect()
    }

    fn numbers(&self, verb: &str) -> Vec<u64> {
        self.log_lines()
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{verb} "))?.split(' ').next()?.parse().ok())
            .collect()
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{}", nanos % 0xffff_ffff_ffff, std::process::id())
}

fn wait(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Publishes the jobs, lets the worker start some, applies `stop`, then consumes the rest in this process.
/// Returns (worker's done jobs, jobs handled here).
async fn scenario(run: &Run, stop: impl FnOnce(&mut Child)) -> (Vec<u64>, Vec<u64>) {
    let mut worker = run.start_worker();
    let bus = run.bus().await;
    for n in 0..COUNT {
        JOBS.publish(&bus, &Job { n }).await.unwrap();
    }
    assert!(wait(60, || run.numbers("start").len() >= 3), "the worker started handlers");
    stop(&mut worker);
    let here: Arc<Mutex<Vec<u64>>> = Arc::default();
    let h = here.clone();
    let config = SubscriptionConfig::default().with_ack_deadline(Duration::from_secs(2));
    bus.subscribe(&JOBS, "worker", config, move |m: Message<Job>| {
        h.lock().unwrap().push(m.n);
        async { Ok(()) }
    })
    .await
    .unwrap();
    let all: BTreeSet<u64> = (0..COUNT).collect();
    let covered = || {
        let mut got: BTreeSet<u64> = run.numbers("done").into_iter().collect();
        got.extend(here.lock().unwrap().iter().copied());
        got == all
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(90);
    while !covered() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // let any stray redelivery show up
    bus.shutdown(Duration::from_secs(5)).await;
    let handled = here.lock().unwrap().clone();
    (run.numbers("done"), handled)
}

async fn sigkill(backend: &'static str) {
    let run = Run::new(backend);
    let (done, here) = scenario(&run, |w| {
        w.kill().unwrap(); // SIGKILL
        w.wait().unwrap();
    })
    .await;
    let started: BTreeSet<u64> = run.numbers("start").into_iter().collect();
    let finished: BTreeSet<u64> = done.iter().copied().collect();
    let interrupted: Vec<u64> = started.difference(&finished).copied().collect();
    let mut all: BTreeSet<u64> = finished.clone();
    all.extend(here.iter().copied());
    eprintln!(
        "CRASH backend={backend} jobs={COUNT} started_in_killed_worker={} finished_there={} interrupted={} handled_after={} \
         lost={}",
        started.len(),
        finished.len(),
        interrupted.len(),
        here.len(),
        COUNT as usize - all.len()
    );
    assert!(!interrupted.is_empty(), "the kill interrupted handlers");
    assert_eq!(all, (0..COUNT).collect(), "nothing lost");
    for n in interrupted {
        assert!(here.contains(&n), "job {n}, interrupted by the kill, was redelivered after the ack deadline");
    }
}

async fn sigterm(backend: &'static str) {
    let run = Run::new(backend);
    let (done, here) = scenario(&run, |w| {
        let status = Command::new("kill").args(["-TERM", &w.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = w.wait().unwrap();
        assert!(exit.success(), "the worker exits cleanly on SIGTERM: {exit:?}");
    })
    .await;
    let lines = run.log_lines();
    assert!(lines.iter().any(|l| l == "shutdown complete"), "graceful shutdown ran: {lines:?}");
    let started: Vec<u64> = run.numbers("start");
    let sigterm_at = lines.iter().position(|l| l == "sigterm").unwrap();
    let in_flight: BTreeSet<u64> =
        lines[..sigterm_at].iter().filter_map(|l| l.strip_prefix("start ")?.split(' ').next()?.parse().ok()).collect();
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for n in done.iter().chain(here.iter()) {
        *counts.entry(*n).or_default() += 1;
    }
    eprintln!(
        "SHUTDOWN backend={backend} jobs={COUNT} started_before_sigterm={} finished_by_worker={} handled_after={} \
         handled_twice={} lost={}",
        in_flight.len(),
        done.len(),
        here.len(),
        counts.values().filter(|c| **c > 1).count(),
        COUNT as usize - counts.len()
    );
    for n in &in_flight {
        assert!(done.contains(n), "job {n}, in flight at SIGTERM, finished before the worker exited");
    }
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), (0..COUNT).collect(), "nothing lost");
    assert!(counts.values().all(|c| *c == 1), "nothing handled twice after a graceful stop: {counts:?}");
    assert_eq!(started.len(), done.len(), "every handler the worker started, it finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_subscriber_killed_with_sigkill_loses_nothing() {
    sigkill("aws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_subscriber_stopped_with_sigterm_finishes_in_flight_and_loses_nothing() {
    sigterm("aws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_subscriber_killed_with_sigkill_loses_nothing() {
    sigkill("gcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_subscriber_stopped_with_sigterm_finishes_in_flight_and_loses_nothing() {
    sigterm("gcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_subscriber_killed_with_sigkill_loses_nothing() {
    sigkill("nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_subscriber_stopped_with_sigterm_finishes_in_flight_and_loses_nothing() {
    sigterm("nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_subscriber_killed_with_sigkill_loses_nothing() {
    sigkill("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_subscriber_stopped_with_sigterm_finishes_in_flight_and_loses_nothing() {
    sigterm("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_subscriber_killed_with_sigkill_loses_nothing() {
    sigkill("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_subscriber_stopped_with_sigterm_finishes_in_flight_and_loses_nothing() {
    sigterm("postgres").await;
}

/// The transactional inbox, on SQLite or PostgreSQL (`DB`), beside the `backend`: a worker subscribed through the
/// inbox commits jobs while every ack it sends is lost, and is killed with SIGKILL; this process takes over through
/// the same inbox. Every job's effect is there exactly once. A job the worker committed comes back after the ack
/// deadline and is skipped, never run again; on a SQL bus with the inbox on its own database it does not come back
/// at all (the delivery was acked in the worker's transaction).
async fn inbox_sigkill<DB: TestDatabase>(backend: &'static str) {
    let run = Run::new(backend);
    let exact = backend == DB::KIND;
    let (url, file) = match DB::KIND {
        "sqlite" => {
            let path = match exact {
                true => std::path::PathBuf::from(run.sqlite_path()),
                false => std::env::temp_dir().join(format!("tidings-inbox-crash-{}.db", run.prefix)),
            };
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            (format!("sqlite://{}?mode=rwc", path.display()), Some(path))
        }
        _ => (postgres_url(), None),
    };
    let pool = sqlx::Pool::<DB>::connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let suffix: String = run.prefix.chars().filter(char::is_ascii_alphanumeric).collect();
    let (table, effects) = (format!("inbox_{suffix}"), format!("effects_{suffix}"));
    DB::run(&pool, &format!("CREATE TABLE {effects} (subscription TEXT NOT NULL, n BIGINT NOT NULL, message_id TEXT)"))
        .await;
    let mut worker = run.start_worker_with(&[
        ("WORKER_INBOX", &url),
        ("WORKER_INBOX_TABLE", &table),
        ("WORKER_EFFECTS", &effects),
        ("WORKER_HANDLE_MS", "200"),
    ]);
    let bus = run.bus().await;
    for n in 0..COUNT {
        JOBS.publish(&bus, &Job { n }).await.unwrap();
    }
    let committed =
        || async { DB::effects(&pool, &effects).await.into_iter().map(|(_, n)| n as u64).collect::<BTreeSet<_>>() };
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while committed().await.len() < 3 {
        assert!(tokio::time::Instant::now() < end, "the worker committed jobs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.kill().unwrap(); // SIGKILL, after its commits and before any of their acks reached the backend
    worker.wait().unwrap();
    let before_kill = committed().await;

    // This process takes over, through the same inbox.
    type PerJob = Arc<Mutex<BTreeMap<u64, u32>>>;
    let (delivered, entered): (PerJob, PerJob) = Default::default();
    let (e, fx) = (entered.clone(), effects.clone());
    let config = SubscriptionConfig::default().with_ack_deadline(Duration::from_secs(2));
    let inbox = DB::inbox(pool.clone()).with_table(&table).unwrap();
    let handler = inbox
        .handler(&bus, &JOBS, "worker", config, move |m: Message<Job>, mut tx| {
            let (e, fx) = (e.clone(), fx.clone());
            async move {
                *e.lock().unwrap().entry(m.n).or_default() += 1;
                DB::record(&mut tx, &fx, "worker", m.n, m.id().as_str()).await?;
                Ok(tx)
            }
        })
        .await
        .unwrap();
    let d = delivered.clone();
    bus.subscribe(&JOBS, "worker", config, move |m: Message<Job>| {
        *d.lock().unwrap().entry(m.n).or_default() += 1;
        handler.call(m)
    })
    .await
    .unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(90);
    while committed().await.len() < COUNT as usize && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await; // the ack deadline twice and more: stray copies land
    bus.shutdown(Duration::from_secs(5)).await;

    let mut per_job: BTreeMap<u64, u32> = BTreeMap::new();
    for (_, n) in DB::effects(&pool, &effects).await {
        *per_job.entry(n as u64).or_default() += 1;
    }
    let (delivered, entered) = (delivered.lock().unwrap().clone(), entered.lock().unwrap().clone());
    let skipped: Vec<u64> = before_kill.iter().copied().filter(|n| delivered.contains_key(n)).collect();
    let ran_again: Vec<u64> = before_kill.iter().copied().filter(|n| entered.contains_key(n)).collect();
    let duplicates: u32 = per_job.values().map(|c| c - 1).sum();
    eprintln!(
        "INBOX CRASH backend={backend} inbox={} mode={} jobs={COUNT} committed_before_kill={} \
         redelivered_and_skipped={} ran_again={} handled_after={} effects={} duplicate_effects={duplicates} lost={}",
        DB::KIND,
        if exact { "exact" } else { "window" },
        before_kill.len(),
        skipped.len(),
        ran_again.len(),
        entered.values().sum::<u32>(),
        per_job.values().sum::<u32>(),
        COUNT as usize - per_job.len()
    );
    assert!(before_kill.len() >= 3, "the kill came after commits");
    assert_eq!(per_job.keys().copied().collect::<BTreeSet<_>>(), (0..COUNT).collect(), "nothing lost");
    assert_eq!(duplicates, 0, "each job's effect exactly once: {per_job:?}");
    assert!(ran_again.is_empty(), "jobs the worker committed never ran again: {ran_again:?}");
    if exact {
        assert!(skipped.is_empty(), "acked in the worker's transactions: none came back: {skipped:?}");
    } else {
        assert_eq!(skipped, before_kill.iter().copied().collect::<Vec<_>>(), "each committed job came back, skipped");
    }
    for t in [table.as_str(), effects.as_str()] {
        DB::run(&pool, &format!("DROP TABLE IF EXISTS {t}")).await;
    }
    pool.close().await;
    if let Some(path) = file.filter(|_| !exact) {
        for end in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{end}", path.display()));
        }
    }
}

macro_rules! inbox_crash_tests {
    ($($name:ident => $backend:literal, $db:ty;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            inbox_sigkill::<$db>($backend).await;
        }
    )*};
}

inbox_crash_tests! {
    aws_inbox_on_sqlite_killed_after_commit_counts_each_effect_once => "aws", sqlx::Sqlite;
    aws_inbox_on_postgres_killed_after_commit_counts_each_effect_once => "aws", sqlx::Postgres;
    gcp_inbox_on_sqlite_killed_after_commit_counts_each_effect_once => "gcp", sqlx::Sqlite;
    gcp_inbox_on_postgres_killed_after_commit_counts_each_effect_once => "gcp", sqlx::Postgres;
    nats_inbox_on_sqlite_killed_after_commit_counts_each_effect_once => "nats", sqlx::Sqlite;
    nats_inbox_on_postgres_killed_after_commit_counts_each_effect_once => "nats", sqlx::Postgres;
    sqlite_inbox_on_its_database_killed_after_commit_leaves_nothing_to_redeliver => "sqlite", sqlx::Sqlite;
    sqlite_inbox_on_postgres_killed_after_commit_counts_each_effect_once => "sqlite", sqlx::Postgres;
    postgres_inbox_on_sqlite_killed_after_commit_counts_each_effect_once => "postgres", sqlx::Sqlite;
    postgres_inbox_on_its_database_killed_after_commit_leaves_nothing_to_redeliver => "postgres", sqlx::Postgres;
}
