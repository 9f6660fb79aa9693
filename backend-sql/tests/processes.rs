//! Across processes (children are this test binary re-run with `TIDINGS_SQL_CHILD` set): two subscriber processes
//! competing on one subscription lose nothing and never run one message in both at once (a redelivery after an
//! expired lease would be counted, and with a 30 s deadline none is expected); a publisher killed mid-batch leaves no
//! half-written batch.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};
use tidings_sql::{PostgresConfig, SqlBackend};

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u64,
}

const CHILD: &str = "TIDINGS_SQL_CHILD";
const BATCH: u64 = 100;

fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()
}

/// A bus on the backend and database the parent passed down.
async fn child_bus() -> Bus {
    let backend = std::env::var("CHILD_BACKEND").unwrap();
    let b = if backend == "postgres" {
        let schema = std::env::var("CHILD_PG_SCHEMA").unwrap();
        SqlBackend::postgres(PostgresConfig::at(support::pg_url(), schema)).await
    } else {
        let mut c = support::sqlite_config();
        c.path = std::env::var("CHILD_SQLITE_PATH").unwrap().into();
        SqlBackend::sqlite(c).await
    };
    Bus::new(Arc::new(b.unwrap()))
}

fn topic() -> Topic<Job> {
    Topic::new(Box::leak(std::env::var("CHILD_TOPIC").unwrap().into_boxed_str()), TopicConfig::at_least_once())
}

fn log(line: String) {
    let path = std::env::var("CHILD_LOG").unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// Not a test of its own: the body of the child processes (a no-op unless `TIDINGS_SQL_CHILD` is set).
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(CHILD) else { return };
    tidings_core::conformance::block_on(async move {
        let bus = child_bus().await;
        let t = topic();
        if role == "publisher" {
            println!("ready");
            for b in 0.. {
                let jobs: Vec<Job> = (0..BATCH).map(|i| Job { n: b * BATCH + i }).collect();
                t.publish_batch(&bus, jobs.iter().map(|j| (j, PublishOptions::new()))).await.unwrap();
            }
        }
        let pid = std::process::id();
        let config = SubscriptionConfig::default().with_ack_deadline(Duration::from_secs(30)).with_max_concurrency(4);
        bus.subscribe(&t, "shared", config, move |m: Message<Job>| async move {
            log(format!("start {} {pid} {} {}", m.n, m.attempt(), now_us()));
            tokio::time::sleep(Duration::from_millis(10)).await;
            log(format!("done {} {pid} {} {}", m.n, m.attempt(), now_us()));
            Ok(())
        })
        .await
        .unwrap();
        println!("ready");
        std::future::pending::<()>().await;
    });
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(role: &str, backend: &str, topic: &str, log: &std::path::Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_entry", "--nocapture", "--test-threads", "1"])
        .env(CHILD, role)
        .env("CHILD_BACKEND", backend)
        .env("CHILD_TOPIC", topic)
        .env("CHILD_LOG", log)
        .env("CHILD_SQLITE_PATH", support::sqlite_path())
        .env("CHILD_PG_SCHEMA", support::pg_schema())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child starts");
    let out = BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        // The harness prints "test child_process_entry ... " on the same line first.
        if line.unwrap().trim_end().ends_with("ready") {
            return child;
        }
    }
    let status = child.wait();
    panic!("the {role} child exited before it was ready: {status:?}");
}

struct Run {
    topic: Topic<Job>,
    log: std::path::PathBuf,
}

fn run(base: &str) -> Run {
    let id = support::unique().replace('_', "-");
    Run {
        topic: Topic::new(Box::leak(format!("{base}-{id}").into_boxed_str()), TopicConfig::at_least_once()),
        log: std::env::temp_dir().join(format!("tidings-sql-{base}-{id}.log")),
    }
}

/// One finished handler run: (n, pid, attempt, start, end).
type HandlerRun = (u64, u32, u32, u128, u128);

/// Every finished handler run, and the number of starts without an end.
fn runs(log: &std::path::Path) -> (Vec<HandlerRun>, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut open: BTreeMap<(u64, u32, u32), u128> = BTreeMap::new();
    let mut done = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let (n, pid, attempt, t) =
            (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap(), f[4].parse().unwrap());
        match f[0] {
            "start" => {
                open.insert((n, pid, attempt), t);
            }
            _ => {
                let start = open.remove(&(n, pid, attempt)).expect("a start before each done");
                done.push((n, pid, attempt, start, t));
            }
        }
    }
    (done, open.len())
}

async fn competing_consumers(backend: &str) {
    if backend == "postgres" {
        support::require_pg().await;
    }
    let r = run("compete");
    let mut children = Children(Vec::new());
    for _ in 0..2 {
        children.0.push(spawn("consumer", backend, r.topic.name(), &r.log));
    }
    let bus = support::bus(backend).await;
    const COUNT: u64 = 300;
    let jobs: Vec<Job> = (0..COUNT).map(|n| Job { n }).collect();
    for chunk in jobs.chunks(50) {
        r.topic.publish_batch(&bus, chunk.iter().map(|j| (j, PublishOptions::new()))).await.unwrap();
    }
    let all: BTreeSet<u64> = (0..COUNT).collect();
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while runs(&r.log).0.iter().map(|d| d.0).collect::<BTreeSet<_>>() != all && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // a stray second delivery would show up now
    let (done, unfinished) = runs(&r.log);
    let mut by_n: BTreeMap<u64, Vec<(u32, u128, u128)>> = BTreeMap::new();
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for (n, pid, _, s, e) in &done {
        by_n.entry(*n).or_default().push((*pid, *s, *e));
        *per_pid.entry(*pid).or_default() += 1;
    }
    let concurrent =
        by_n.values().filter(|v| v.iter().any(|a| v.iter().any(|b| a.0 != b.0 && a.1 < b.2 && b.1 < a.2))).count();
    let redelivered = done.iter().filter(|d| d.2 > 1).count();
    eprintln!(
        "COMPETE backend={backend} messages={COUNT} handled={} per_process={:?} twice_at_once={concurrent} \
         redelivered_after_lease={redelivered} unfinished={unfinished}",
        done.len(),
        per_pid.values().collect::<Vec<_>>()
    );
    assert_eq!(by_n.keys().copied().collect::<BTreeSet<_>>(), all, "nothing lost");
    assert_eq!(concurrent, 0, "no message ran in both processes at once");
    assert_eq!(redelivered, 0, "no lease expired (30 s deadline, 10 ms handlers)");
    assert_eq!(done.len() as u64, COUNT, "each message handled once");
    assert_eq!(per_pid.len(), 2, "both processes took a share: {per_pid:?}");
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_processes_compete_on_one_subscription() {
    competing_consumers("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_compete_on_one_subscription() {
    competing_consumers("postgres").await;
}

async fn killed_publisher(backend: &str) {
    if backend == "postgres" {
        support::require_pg().await;
    }
    let r = run("killed");
    let bus = support::bus(backend).await;
    // Registered first (and stopped), so every batch fans out to it; nothing consumes meanwhile.
    let sub = bus
        .subscribe(&r.topic, "count", SubscriptionConfig::default(), |_m: Message<Job>| async { Ok(()) })
        .await
        .unwrap();
    sub.shutdown(Duration::from_secs(5)).await;
    let mut children = Children(Vec::new());
    children.0.push(spawn("publisher", backend, r.topic.name(), &r.log));
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while sub.backlog().await.unwrap().unwrap() < 5 * BATCH && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    children.0[0].kill().unwrap(); // SIGKILL, mid-batch or between two
    children.0[0].wait().unwrap();
    let backlog = sub.backlog().await.unwrap().unwrap();
    eprintln!("KILLED_PUBLISHER backend={backend} batch={BATCH} deliveries={backlog}");
    assert!(backlog >= 5 * BATCH);
    assert_eq!(backlog % BATCH, 0, "only whole batches were written: {backlog}");
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_publisher_killed_mid_batch_leaves_no_half_batch() {
    killed_publisher("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_publisher_killed_mid_batch_leaves_no_half_batch() {
    killed_publisher("postgres").await;
}
