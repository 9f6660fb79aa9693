//! Across processes (children are this test binary re-run with `TIDINGS_SQL_CHILD` set): two subscriber processes
//! competing on one subscription lose nothing and never run one message in both at once (a redelivery after an
//! expired lease would be counted, and with a 30 s deadline none is expected); a publisher killed mid-batch leaves no
//! half-written batch, at any batch size; on SQLite, a publish through the bus inside this process's own write
//! transaction fails naming `publish_in`, and one waiting for another process's transaction is only retried.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteConnectOptions;
use tidings_core::{Bus, ErrorKind, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};
use tidings_sql::{PostgresConfig, SqlBackend, SqliteConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u64,
}

const CHILD: &str = "TIDINGS_SQL_CHILD";

fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()
}

/// A bus on the backend and database the parent passed down.
async fn child_bus() -> Bus {
    let backend = std::env::var("CHILD_BACKEND").unwrap();
    let b = if backend == "postgres" {
        let schema = std::env::var("CHILD_PG_SCHEMA").unwrap();
        let mut url = support::pg_url();
        if let Ok(name) = std::env::var("CHILD_PG_APP") {
            url = format!("{url}{}application_name={name}", if url.contains('?') { '&' } else { '?' });
        }
        SqlBackend::postgres(PostgresConfig::at(url, schema)).await
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
    tidings_testkit::conformance::block_on(async move {
        if role == "locker" {
            // An open transaction that has written: it holds the file's write lock until this process dies.
            let path = std::env::var("CHILD_SQLITE_PATH").unwrap();
            let pool = sqlx::SqlitePool::connect_with(SqliteConnectOptions::new().filename(path)).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO users (id) VALUES (2)").execute(&mut *tx).await.unwrap();
            println!("ready");
            std::future::pending::<()>().await;
        }
        let bus = child_bus().await;
        let t = topic();
        if role == "publisher" {
            let size: u64 = std::env::var("CHILD_BATCH").unwrap().parse().unwrap();
            println!("ready");
            for b in 0.. {
                let jobs: Vec<Job> = (0..size).map(|i| Job { n: b * size + i }).collect();
                log(format!("publishing {b}"));
                t.publish_batch(&bus, jobs.iter().map(|j| (j, PublishOptions::new()))).await.unwrap();
                log(format!("published {b}"));
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
    spawn_with(role, backend, topic, log, &[])
}

fn spawn_with(role: &str, backend: &str, topic: &str, log: &std::path::Path, env: &[(&str, String)]) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_entry", "--nocapture", "--test-threads", "1"])
        .env(CHILD, role)
        .env("CHILD_BACKEND", backend)
        .env("CHILD_TOPIC", topic)
        .env("CHILD_LOG", log)
        .env("CHILD_SQLITE_PATH", support::sqlite_path())
        .env("CHILD_PG_SCHEMA", support::pg_schema())
        .envs(env.iter().map(|(k, v)| (k, v)))
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

/// Batch sizes of the killed publisher: below one INSERT statement (500 messages), exactly one, just above a
/// statement boundary, the 2,000 of issue 22 (four statements, a boundary), and a large batch of 20 statements (the
/// API sets no largest batch; a SQL backend takes any in one transaction).
const KILLED_SIZES: [u64; 5] = [300, 500, 1_501, 2_000, 10_000];
/// When each kill lands, as a share of the last batch's duration after a commit was seen.
const KILL_AT: [f64; 4] = [0.1, 0.35, 0.6, 0.85];

/// The publisher child's log: batches it began and batches whose publish returned Ok.
fn batches(log: &std::path::Path) -> (u64, u64, bool) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let began = text.lines().filter(|l| l.starts_with("publishing ")).count() as u64;
    let done = text.lines().filter(|l| l.starts_with("published ")).count() as u64;
    (began, done, text.lines().last().is_some_and(|l| l.starts_with("publishing ")))
}

/// Kills a child publishing batches of each size mid-batch, again and again (after a varying share of a batch's
/// duration): the subscription holds whole batches only, never a part of one, and the batch being published when
/// the child died is there whole or not at all.
async fn killed_publisher(backend: &str) {
    if backend == "postgres" {
        support::require_pg().await;
    }
    let bus = support::bus(backend).await;
    let pg = match backend {
        "postgres" => Some(sqlx::PgPool::connect(&support::pg_url()).await.unwrap()),
        _ => None,
    };
    let mut mid_batch = 0;
    for size in KILLED_SIZES {
        let r = run(&format!("killed{size}"));
        // Registered first (and stopped), so every batch fans out to it; nothing consumes meanwhile.
        let sub = bus
            .subscribe(&r.topic, "count", SubscriptionConfig::default(), |_m: Message<Job>| async { Ok(()) })
            .await
            .unwrap();
        sub.shutdown(Duration::from_secs(5)).await;
        let backlog = || async { sub.backlog().await.unwrap().unwrap() };
        let (mut seen, mut whole_before, mut done_before) = (0, 0, 0);
        for at in KILL_AT {
            let app = format!("tidings-killed-{}", support::unique());
            let env = [("CHILD_BATCH", size.to_string()), ("CHILD_PG_APP", app.clone())];
            let mut child = Children(vec![spawn_with("publisher", backend, r.topic.name(), &r.log, &env)]);
            // Two commits of this child: it is in its loop, and the second times a batch.
            let mut commits = Vec::new();
            let end = tokio::time::Instant::now() + Duration::from_secs(30);
            while commits.len() < 2 {
                assert!(tokio::time::Instant::now() < end, "the {size}-message publisher made no progress");
                let now = backlog().await;
                if now > seen {
                    seen = now;
                    commits.push(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep((commits[1] - commits[0]).mul_f64(at)).await;
            child.0[0].kill().unwrap(); // SIGKILL
            child.0[0].wait().unwrap();
            if let Some(pg) = &pg {
                // A commit the child sent before it died is still applied: wait until its connections are gone.
                let gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = $1";
                let end = tokio::time::Instant::now() + Duration::from_secs(20);
                while !sqlx::query_scalar::<_, bool>(gone).bind(&app).fetch_one(pg).await.unwrap() {
                    assert!(tokio::time::Instant::now() < end, "the killed child's connections stay open");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let after = backlog().await;
            let (began, done, interrupted) = batches(&r.log);
            mid_batch += u32::from(interrupted);
            eprintln!(
                "KILLED_PUBLISHER backend={backend} batch={size} kill_at={at} deliveries={after} batches_begun={began} \
                 returned_ok={done} killed_mid_publish={interrupted}"
            );
            assert_eq!(after % size, 0, "{backend}: only whole batches of {size} were written, not {after}");
            // This child's batches: those whose publish returned Ok, and the interrupted one whole or not at all.
            let (whole, ok) = (after / size - whole_before, done - done_before);
            assert!(
                whole == ok || (interrupted && whole == ok + 1),
                "{backend}: this child stored {whole} batches of {size}; {ok} of its publishes returned Ok{}",
                if interrupted { " and one was interrupted" } else { "" }
            );
            (seen, whole_before, done_before) = (after, after / size, done);
        }
    }
    let kills = (KILLED_SIZES.len() * KILL_AT.len()) as u32;
    assert!(mid_batch * 2 >= kills, "{backend}: only {mid_batch} of {kills} kills landed inside a publish call");
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

/// Issue 22, item 13: a publish through the bus while this process's own transaction on the bus file has written
/// (and so holds SQLite's one write lock) cannot commit before that transaction ends, which waits for the publish. It
/// fails after one busy timeout, not retried, with an error naming `tidings::sql::publish_in`, which publishes inside
/// that transaction. Another process's open transaction is only waited for: SQLite's own retryable error, no advice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_publish_inside_this_process_write_transaction_fails_naming_publish_in() {
    let dir = std::env::temp_dir().join(format!("tidings-sql-own-lock-{}", support::unique()));
    let path = dir.join("bus.db");
    let mut config = SqliteConfig::at(&path);
    config.busy_timeout = Duration::from_millis(300);
    let bus = Bus::new(Arc::new(SqlBackend::sqlite(config).await.unwrap()));
    let topic: Topic<Job> = Topic::new("own-lock", TopicConfig::at_least_once());
    let sub = bus.subscribe(&topic, "count", SubscriptionConfig::default(), |_m: Message<Job>| async { Ok(()) });
    let sub = sub.await.unwrap();
    sub.shutdown(Duration::from_secs(5)).await;
    let app = sqlx::SqlitePool::connect_with(SqliteConnectOptions::new().filename(&path)).await.unwrap();
    sqlx::query("CREATE TABLE users (id INTEGER)").execute(&app).await.unwrap();

    let mut tx = app.begin().await.unwrap();
    sqlx::query("INSERT INTO users (id) VALUES (1)").execute(&mut *tx).await.unwrap();
    let e = topic
        .publish(&bus, &Job { n: 1 })
        .await
        .expect_err("the bus cannot write while this process's tx holds the lock");
    eprintln!("OWN_LOCK error: {e}");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(!e.is_retryable(), "failed once, not after four busy timeouts: {e}");
    let text = e.to_string();
    assert!(text.contains("tidings::sql::publish_in") && text.contains(&path.display().to_string()), "{text}");
    // What the error says to do works: publish inside the transaction.
    tidings_sql::publish_in(&bus, &mut *tx, &topic, &Job { n: 2 }).await.unwrap();
    tx.commit().await.unwrap();
    topic.publish(&bus, &Job { n: 3 }).await.unwrap();
    assert_eq!(sub.backlog().await.unwrap(), Some(2), "the message of publish_in and the one after the commit");

    let log = dir.join("locker.log");
    let env = [("CHILD_SQLITE_PATH", path.display().to_string())];
    let mut locker = Children(vec![spawn_with("locker", "sqlite", topic.name(), &log, &env)]);
    let e = topic.publish(&bus, &Job { n: 4 }).await.expect_err("another process holds the write lock");
    eprintln!("OTHER_PROCESS_LOCK error: {e}");
    assert!(e.is_retryable() && !e.to_string().contains("publish_in"), "SQLite's own error, retried: {e}");
    locker.0[0].kill().unwrap();
    locker.0[0].wait().unwrap();
    topic.publish(&bus, &Job { n: 5 }).await.unwrap();
    assert_eq!(sub.backlog().await.unwrap(), Some(3));
    bus.shutdown(Duration::from_secs(5)).await;
    app.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
