//! The transactional inbox's cost (`tidings-inbox`): handler throughput with the inbox beside the same work without
//! it, on PostgreSQL and on SQLite.
//!
//! `tidings-bench inbox_throughput [--quick] [--messages N] [--rounds R]`: per database, N messages (5,000; `--quick`
//! 1,000) published to the in-memory bus and handled by one subscription (8 handlers at once, a pool of 8
//! connections), three ways, each round once in turn, R rounds (3): `plain`, the work alone in a transaction (begin,
//! insert one row, commit: no de-duplication); `hand_written`, the de-duplication written by hand in the handler
//! (begin, `INSERT ... ON CONFLICT DO NOTHING` of the message id into a table of its own, roll back and ack when it
//! was there, else insert the row and commit); `inbox`, the same work through `Inbox::subscribe`. The figure is
//! messages handled per second from the first publish to the last row, the median of the rounds. On SQLite every
//! transaction begins with `BEGIN IMMEDIATE`, as the inbox's does (with a deferred begin, concurrent writers fail
//! to upgrade their lock). The bus is the same for the three, so the ratios are the handlers' own. PostgreSQL is
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`), tables made and dropped per run; SQLite a
//! file in the temp dir. Prints one line per database, `inbox_throughput_<database>`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_core::{Bus, HandlerError, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};
use tidings_inbox::Inbox;

const CONCURRENCY: usize = 8;

fn unique() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 12..].to_string()
}

fn config() -> SubscriptionConfig {
    SubscriptionConfig::default().with_max_concurrency(CONCURRENCY)
}

/// Publishes `n` messages to `topic` on `bus` and waits until `done()` counts `n`; messages per second.
async fn timed<F: std::future::Future<Output = i64>>(
    bus: &Bus,
    topic: &Topic<crate::util::Event>,
    n: u64,
    done: impl Fn() -> F,
) -> f64 {
    let start = Instant::now();
    let events: Vec<crate::util::Event> = (0..n).map(crate::util::event).collect();
    for chunk in events.chunks(500) {
        topic.publish_batch(bus, chunk.iter().map(|e| (e, PublishOptions::new()))).await.expect("publish");
    }
    let deadline = start + Duration::from_secs(600);
    while done().await < n as i64 {
        assert!(Instant::now() < deadline, "inbox_throughput: the handlers did not finish in 10 minutes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The three ways on one database: `$db` the sqlx database, `$pool` a pool on it, `$begin` how a transaction begins,
/// `$inbox` the inbox constructor. Returns the JSON line.
macro_rules! run_database {
    ($name:literal, $pool:expr, $n:expr, $rounds:expr, |$p:ident| $begin:expr, $inbox:path) => {{
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
        let done = || async { sqlx::query_scalar::<_, i64>(&count).fetch_one(&pool).await.expect("count") };
        let (mut plain, mut hand, mut inboxed) = (Vec::new(), Vec::new(), Vec::new());
        let inbox = $inbox(pool.clone()).with_table(&inbox_table).expect("table name");
        inbox.migrate().await.expect("the inbox table");
        for round in 0..rounds {
            eprintln!("inbox_throughput: {} round {}/{rounds}", $name, round + 1);
            // plain: the work in a transaction.
            sqlx::query(&format!("DELETE FROM {work}")).execute(&pool).await.unwrap();
            let bus = tidings_core::Bus::new(Arc::new(tidings_local::LocalBackend::new()));
            let topic = Topic::<crate::util::Event>::new(Box::leak(format!("plain-{}", unique()).into_boxed_str()), TopicConfig::at_least_once());
            let (p2, w) = (pool.clone(), insert_work.clone());
            bus.subscribe(&topic, "s", config(), move |m: Message<crate::util::Event>| {
                let ($p, w) = (p2.clone(), w.clone());
                async move {
                    let mut tx = $begin.await?;
                    sqlx::query(&w).bind(m.id as i64).bind(m.meta.id.as_str()).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok::<(), HandlerError>(())
                }
            })
            .await
            .unwrap();
            plain.push(timed(&bus, &topic, n, &done).await);
            bus.shutdown(Duration::from_secs(5)).await;

            // hand-written: INSERT ... ON CONFLICT DO NOTHING, the work, commit.
            sqlx::query(&format!("DELETE FROM {work}")).execute(&pool).await.unwrap();
            let bus = tidings_core::Bus::new(Arc::new(tidings_local::LocalBackend::new()));
            let topic = Topic::<crate::util::Event>::new(Box::leak(format!("hand-{}", unique()).into_boxed_str()), TopicConfig::at_least_once());
            let (p2, w, d) = (pool.clone(), insert_work.clone(), insert_dedup.clone());
            bus.subscribe(&topic, "s", config(), move |m: Message<crate::util::Event>| {
                let ($p, w, d) = (p2.clone(), w.clone(), d.clone());
                async move {
                    let mut tx = $begin.await?;
                    let fresh = sqlx::query(&d).bind("s").bind(m.meta.id.as_str()).execute(&mut *tx).await?;
                    if fresh.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(());
                    }
                    sqlx::query(&w).bind(m.id as i64).bind(m.meta.id.as_str()).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok::<(), HandlerError>(())
                }
            })
            .await
            .unwrap();
            hand.push(timed(&bus, &topic, n, &done).await);
            bus.shutdown(Duration::from_secs(5)).await;

            // inbox: the same work through Inbox::subscribe.
            sqlx::query(&format!("DELETE FROM {work}")).execute(&pool).await.unwrap();
            let bus = tidings_core::Bus::new(Arc::new(tidings_local::LocalBackend::new()));
            let topic = Topic::<crate::util::Event>::new(Box::leak(format!("inbox-{}", unique()).into_boxed_str()), TopicConfig::at_least_once());
            let w = insert_work.clone();
            inbox
                .subscribe(&bus, &topic, "s", config(), move |m: Message<crate::util::Event>, mut tx| {
                    let w = w.clone();
                    async move {
                        sqlx::query(&w).bind(m.id as i64).bind(m.meta.id.as_str()).execute(&mut *tx).await?;
                        Ok(tx)
                    }
                })
                .await
                .unwrap();
            inboxed.push(timed(&bus, &topic, n, &done).await);
            bus.shutdown(Duration::from_secs(5)).await;
        }
        for t in [&work, &dedup, &inbox_table] {
            sqlx::query(&format!("DROP TABLE IF EXISTS {t}")).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let (plain, hand, inboxed) = (median(plain), median(hand), median(inboxed));
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
        })
        .to_string()
    }};
}

pub async fn throughput(args: &[String], quick: bool) -> String {
    let n = crate::util::arg(args, "--messages").unwrap_or(if quick { 1_000 } else { 5_000 });
    let rounds = crate::util::arg(args, "--rounds").unwrap_or(3) as usize;
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pg = sqlx::postgres::PgPoolOptions::new()
        .max_connections(CONCURRENCY as u32)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("inbox_throughput needs PostgreSQL at DATABASE_URL={url}: {e}"));
    let postgres = run_database!("postgres", pg, n, rounds, |pool| pool.begin(), Inbox::postgres);

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
    let sqlite = run_database!("sqlite", lite, n, rounds, |pool| pool.begin_with("BEGIN IMMEDIATE"), Inbox::sqlite);
    for end in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{end}", path.display()));
    }
    format!("{postgres}\n{sqlite}")
}
