//! The transactional inbox's cost (`tidings-inbox`): handler throughput with the inbox beside the same work without
//! it, on PostgreSQL and on SQLite.
//!
//! `tidings-bench inbox_throughput [--quick] [--messages N] [--rounds R]`: per database, N messages (5,000; `--quick`
//! 1,000) published to the in-memory bus and handled by one subscription (8 handlers at once, a pool of 8
//! connections), three ways, R rounds (3) of each way once, the way that starts a round rotating: `plain`, the work
//! alone in a transaction (begin, insert one row, commit: no de-duplication); `hand_written`, the de-duplication
//! written by hand in the handler (begin, `INSERT ... ON CONFLICT DO NOTHING` of (subscription, message id), keyed
//! as the inbox keys its rows, into a table of its own, roll back and ack when it was there, else insert the row and
//! commit); `inbox`, the same work through the inbox (`Inbox::handler`, as `Inbox::subscribe` subscribes it). Each
//! way runs on a new bus and topic with the work table emptied first; the figure is messages handled per second from
//! the first publish until the handlers counted N (each counted when it returned, after its commit), the median of
//! the rounds, and the work table holds N rows after each run. On SQLite every transaction begins with
//! `BEGIN IMMEDIATE`, as the inbox's does (with a deferred begin, concurrent writers fail to upgrade their lock). The
//! bus is the same for the three, so the ratios are the handlers' own; `inbox_vs_hand_written_per_round` gives each
//! round's ratio. PostgreSQL is `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), tables made and
//! dropped per run; SQLite a file in the temp dir.
//! Prints one line per database, `inbox_throughput_<database>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_core::handler::HandlerFuture;
use tidings_core::{Bus, Handler, HandlerError, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};
use tidings_inbox::Inbox;

const CONCURRENCY: usize = 8;

fn unique() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 12..].to_string()
}

fn config() -> SubscriptionConfig {
    SubscriptionConfig::default().with_max_concurrency(CONCURRENCY)
}

/// Publishes `n` messages to `topic` on `bus` and waits until the handlers counted `n` in `done` (each after its
/// transaction committed); messages per second.
async fn timed(bus: &Bus, topic: &Topic<crate::util::Event>, n: u64, done: &AtomicU64) -> f64 {
    let start = Instant::now();
    let events: Vec<crate::util::Event> = (0..n).map(crate::util::event).collect();
    for chunk in events.chunks(500) {
        topic.publish_batch(bus, chunk.iter().map(|e| (e, PublishOptions::new()))).await.expect("publish");
    }
    let deadline = start + Duration::from_secs(600);
    while done.load(Ordering::Acquire) < n {
        assert!(Instant::now() < deadline, "inbox_throughput: the handlers did not finish in 10 minutes");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// A handler that counts its deliveries handled (`Ok`) once the inner handler returned: for the inbox, after its
/// commit.
struct Counted<H> {
    inner: H,
    done: Arc<AtomicU64>,
}

impl<T: Send + 'static, H: Handler<T>> Handler<T> for Counted<H> {
    fn call(&self, message: Message<T>) -> HandlerFuture {
        let (fut, done) = (self.inner.call(message), self.done.clone());
        Box::pin(async move {
            let r = fut.await;
            if r.is_ok() {
                done.fetch_add(1, Ordering::Release);
            }
            r
        })
    }
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`: 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// CPU time (user + system, clock ticks) of this process and of `pids` (the PostgreSQL backends of the bench's
/// pool), from /proc; `None` where it cannot be read (not Linux, PostgreSQL on another machine, a backend gone).
fn cpu_ticks(pids: &[i32]) -> Option<u64> {
    let read = |path: &str| -> Option<u64> {
        let stat = std::fs::read_to_string(path).ok()?;
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    };
    let mut total = read("/proc/self/stat")?;
    for pid in pids {
        total += read(&format!("/proc/{pid}/stat"))?;
    }
    Some(total)
}

/// The server processes of the bench's PostgreSQL pool (connections named `app`), all of them open.
async fn pg_pids(pool: &sqlx::PgPool, app: &str) -> Vec<i32> {
    // Opens every connection of the pool first, so none starts (and is missed) during a run.
    let mut held = Vec::new();
    for _ in 0..CONCURRENCY {
        held.push(pool.acquire().await.expect("a connection"));
    }
    drop(held);
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
        .bind(app)
        .fetch_all(pool)
        .await
        .expect("pg_stat_activity")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The three ways on one database: `$db` the sqlx database, `$pool` a pool on it, `$begin` how a transaction begins,
/// `$inbox` the inbox constructor. Returns the JSON line.
macro_rules! run_database {
    ($name:literal, $pool:expr, $n:expr, $rounds:expr, |$p:ident| $begin:expr, $inbox:path, |$pp:ident| $pids:expr) => {{
        let pool = $pool;
        let (n, rounds) = ($n, $rounds);
        let suffix = unique();
        let (work, dedup, inbox_table) =
            (format!("bench_work_{suffix}"), format!("bench_dedup_{suffix}"), format!("bench_inbox_{suffix}"));
        for sql in [
            format!("CREATE TABLE {work} (id BIGINT NOT NULL, message_id TEXT NOT NULL)"),
            format!("CREATE TABLE {dedup} (subscription TEXT NOT NULL, message_id TEXT NOT NULL, PRIMARY KEY (subscription, message_id))"),
        ] {
            sqlx::query(&sql).execute(&pool).await.expect("create the bench tables");
        }
        let insert_work = Arc::new(format!("INSERT INTO {work} (id, message_id) VALUES ($1, $2)"));
        let insert_dedup =
            Arc::new(format!("INSERT INTO {dedup} (subscription, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"));
        let count = format!("SELECT count(*) FROM {work}");
        let (mut plain, mut hand, mut inboxed) = (Vec::new(), Vec::new(), Vec::new());
        // CPU microseconds per message of each way, where /proc tells.
        let mut cpu: [Vec<f64>; 3] = Default::default();
        let inbox = $inbox(pool.clone()).with_table(&inbox_table).expect("table name");
        inbox.migrate().await.expect("the inbox table");
        for round in 0..rounds {
            eprintln!("inbox_throughput: {} round {}/{rounds}", $name, round + 1);
            // Each way starts a round in turn, so none always runs after the others.
            for way in (0..3).map(|k| (round + k) % 3) {
                // An empty work table (no dead rows of the way before), a new bus, a new topic.
                let empty = if $name == "sqlite" { format!("DELETE FROM {work}") } else { format!("TRUNCATE {work}") };
                sqlx::query(&empty).execute(&pool).await.unwrap();
                let bus = tidings_core::Bus::new(Arc::new(tidings_local::LocalBackend::new()));
                let topic = Topic::<crate::util::Event>::new(
                    Box::leak(format!("inbox-bench-{}", unique()).into_boxed_str()),
                    TopicConfig::at_least_once(),
                );
                let done = Arc::new(AtomicU64::new(0));
                match way {
                    0 => {
                        // plain: the work in a transaction.
                        let (p2, w) = (pool.clone(), insert_work.clone());
                        let handler = move |m: Message<crate::util::Event>| {
                            let ($p, w) = (p2.clone(), w.clone());
                            async move {
                                let mut tx = $begin.await?;
                                sqlx::query(&w).bind(m.id as i64).bind(m.meta.id.as_str()).execute(&mut *tx).await?;
                                tx.commit().await?;
                                Ok::<(), HandlerError>(())
                            }
                        };
                        bus.subscribe(&topic, "s", config(), Counted { inner: handler, done: done.clone() }).await.unwrap();
                    }
                    1 => {
                        // hand-written: INSERT ... ON CONFLICT DO NOTHING, the work, commit.
                        // Keyed as the inbox keys its rows: the subscription's resource name and the message id.
                        let key: Arc<str> = bus.subscription_spec(&topic, "s", config()).resource.into();
                        let (p2, w, d) = (pool.clone(), insert_work.clone(), insert_dedup.clone());
                        let handler = move |m: Message<crate::util::Event>| {
                            let ($p, w, d, key) = (p2.clone(), w.clone(), d.clone(), key.clone());
                            async move {
                                let mut tx = $begin.await?;
                                let fresh =
                                    sqlx::query(&d).bind(&*key).bind(m.meta.id.as_str()).execute(&mut *tx).await?;
                                if fresh.rows_affected() == 0 {
                                    tx.rollback().await?;
                                    return Ok(());
                                }
                                sqlx::query(&w).bind(m.id as i64).bind(m.meta.id.as_str()).execute(&mut *tx).await?;
                                tx.commit().await?;
                                Ok::<(), HandlerError>(())
                            }
                        };
                        bus.subscribe(&topic, "s", config(), Counted { inner: handler, done: done.clone() }).await.unwrap();
                    }
                    _ => {
                        // inbox: the same work through the inbox (Inbox::handler is what Inbox::subscribe subscribes).
                        let w = insert_work.clone();
                        let handler = inbox
                            .handler(&bus, &topic, "s", config(), move |m: Message<crate::util::Event>, mut tx| {
                                let w = w.clone();
                                async move {
                                    sqlx::query(&w).bind(m.id as i64).bind(m.meta.id.as_str()).execute(&mut *tx).await?;
                                    Ok(tx)
                                }
                            })
                            .await
                            .unwrap();
                        bus.subscribe(&topic, "s", config(), Counted { inner: handler, done: done.clone() }).await.unwrap();
                    }
                }
                let pids: Vec<i32> = {
                    let $pp = &pool;
                    $pids.await
                };
                let before = cpu_ticks(&pids);
                let rate = timed(&bus, &topic, n, &done).await;
                if let (Some(b), Some(a)) = (before, cpu_ticks(&pids)) {
                    cpu[way].push((a - b) as f64 * 1e6 / TICKS_PER_S / n as f64);
                }
                bus.shutdown(Duration::from_secs(5)).await;
                let rows: i64 = sqlx::query_scalar(&count).fetch_one(&pool).await.expect("count");
                assert_eq!(rows, n as i64, "inbox_throughput: way {way} wrote one row per message");
                [&mut plain, &mut hand, &mut inboxed][way].push(rate);
            }
        }
        for t in [&work, &dedup, &inbox_table] {
            sqlx::query(&format!("DROP TABLE IF EXISTS {t}")).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let ratios: Vec<f64> = inboxed.iter().zip(&hand).map(|(i, h)| (i / h * 100.0).round() / 100.0).collect();
        let (plain, hand, inboxed) = (median(plain), median(hand), median(inboxed));
        // A way's figure only when every round of it could be read.
        let cpu: Vec<Option<f64>> = cpu.into_iter().map(|v| (v.len() == rounds).then(|| median(v).round())).collect();
        serde_json::json!({
            "bench": concat!("inbox_throughput_", $name),
            "messages": n,
            "rounds": rounds,
            "concurrency": CONCURRENCY,
            "plain_msgs_per_s": plain.round(),
            "hand_written_msgs_per_s": hand.round(),
            "inbox_msgs_per_s": inboxed.round(),
            "inbox_vs_hand_written": (inboxed / hand * 100.0).round() / 100.0,
            "inbox_vs_plain": (inboxed / plain * 100.0).round() / 100.0,
            "inbox_vs_hand_written_per_round": ratios,
            "plain_cpu_us_per_msg": cpu[0],
            "hand_written_cpu_us_per_msg": cpu[1],
            "inbox_cpu_us_per_msg": cpu[2],
            "inbox_vs_hand_written_cpu": cpu[1].zip(cpu[2]).map(|(h, i)| (h / i * 100.0).round() / 100.0),
        })
        .to_string()
    }};
}

pub async fn throughput(args: &[String], quick: bool) -> String {
    let n = crate::util::arg(args, "--messages").unwrap_or(if quick { 1_000 } else { 5_000 });
    let rounds = crate::util::arg(args, "--rounds").unwrap_or(3) as usize;
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let app = format!("tidings-bench-inbox-{}", unique());
    let pg_opts = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap_or_else(|e| panic!("DATABASE_URL={url}: {e}"))
        .application_name(&app);
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(CONCURRENCY as u32)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(pg_opts)
        .await
        .unwrap_or_else(|e| panic!("inbox_throughput needs PostgreSQL at DATABASE_URL={url}: {e}"));
    let postgres =
        run_database!("postgres", pg, n, rounds, |pool| pool.begin(), Inbox::postgres, |pool| pg_pids(pool, &app));

    let path = std::env::temp_dir().join(format!("tidings-bench-inbox-{}.db", unique()));
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30));
    let lite = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(CONCURRENCY as u32)
        .connect_with(opts)
        .await
        .expect("the SQLite file");
    let sqlite = run_database!(
        "sqlite",
        lite,
        n,
        rounds,
        |pool| pool.begin_with("BEGIN IMMEDIATE"),
        Inbox::sqlite,
        |_pool| async {
            Vec::new() // its work runs in this process's threads
        }
    );
    for end in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{end}", path.display()));
    }
    format!("{postgres}\n{sqlite}")
}
