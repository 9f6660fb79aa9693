//! The inbox on PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`), with the in-memory
//! bus.
#![cfg(feature = "postgres")]

mod support;
#[macro_use]
#[path = "support/cases.rs"]
mod cases;
#[macro_use]
#[path = "support/batch_cases.rs"]
mod batch_cases;

use sqlx::postgres::PgPoolOptions;
use tidings_inbox::Inbox;

type Db = sqlx::Postgres;

struct Setup {
    pool: sqlx::PgPool,
    inbox: Inbox<Db>,
    effects: String,
}

impl Setup {
    async fn cleanup(self) {
        for t in [self.inbox.table(), &self.effects] {
            sqlx::query(&format!("DROP TABLE IF EXISTS {t}")).execute(&self.pool).await.unwrap();
        }
        self.pool.close().await;
    }
}

fn url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn setup() -> Setup {
    let url = url();
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("the inbox tests need PostgreSQL at DATABASE_URL={url}: {e}"));
    let suffix = support::unique();
    let effects = format!("effects_{suffix}");
    sqlx::query(&format!("CREATE TABLE {effects} (n BIGINT NOT NULL, message_id TEXT NOT NULL)"))
        .execute(&pool)
        .await
        .unwrap();
    let inbox = Inbox::postgres(pool.clone()).with_table(&format!("inbox_{suffix}")).unwrap();
    Setup { pool, inbox, effects }
}

fn bus() -> tidings_core::Bus {
    tidings_core::Bus::new(std::sync::Arc::new(tidings_local::LocalBackend::new()))
}

inbox_cases!();
inbox_batch_cases!();

/// The database connection is terminated (`pg_terminate_backend`) while the handler runs: the delivery fails and is
/// retried on a new connection; it is never acked without its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_handler_ends_in_a_retry() {
    let s = setup().await;
    let bus = bus();
    let t = support::topic("killed");
    let (effects, killer) = (s.effects.clone(), s.pool.clone());
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = attempts.clone();
    let sub = s
        .inbox
        .subscribe(&bus, &t, "s", config(3), move |m: Message<Job>, mut tx| {
            let (effects, killer, a) = (effects.clone(), killer.clone(), a.clone());
            async move {
                a.lock().unwrap().push(m.attempt());
                record(&mut tx, &effects, &m).await;
                if m.attempt() == 1 {
                    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *tx).await?;
                    let killed: bool =
                        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&killer).await?;
                    assert!(killed, "the handler's connection was terminated");
                }
                Ok(tx) // attempt 1: its connection is gone, so nothing can commit
            }
        })
        .await
        .unwrap();
    t.publish(&bus, &Job { n: 3 }).await.unwrap();
    assert!(sub.wait_idle(Duration::from_secs(20)).await.unwrap());
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2], "retried once");
    assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 1);
    assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.inbox.table())).await, 1);
    assert!(sub.dead_letters(1).await.unwrap().is_empty());
    bus.shutdown(Duration::from_secs(5)).await;
    s.cleanup().await;
}
