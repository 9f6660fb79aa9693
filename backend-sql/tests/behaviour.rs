//! Behaviour specific to the SQL backends, on both dialects: publish inside the application's transaction, a restart
//! loses nothing accepted, retention expiry, exact backlog and DLQ depth, and bad input (an incompatible schema
//! version, a path that cannot be created, an unreachable server, missing tables under `verify`).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{Bus, HandlerError, Message, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};
use tidings_sql::{PostgresConfig, Provisioning, SqlBackend, SqliteConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: u64,
}

fn topic(base: &str) -> Topic<Job> {
    Topic::new(
        Box::leak(format!("{base}-{}", support::unique().replace('_', "-")).into_boxed_str()),
        TopicConfig::at_least_once(),
    )
}

fn quick() -> SubscriptionConfig {
    SubscriptionConfig::DEFAULT
        .with_ack_deadline(Duration::from_secs(5))
        .with_retry(RetryPolicy::new(Duration::from_millis(50), Duration::from_millis(100)).with_max_retries(0))
}

type Seen = Arc<Mutex<Vec<u64>>>;

async fn collect(bus: &Bus, t: &Topic<Job>, name: &str, cfg: SubscriptionConfig) -> (tidings_core::Subscription, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let sub = bus
        .subscribe(t, name, cfg, move |m: Message<Job>| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(m.n);
                if m.n >= 1000 {
                    return Err(HandlerError::unrecoverable(format!("job {} is poison", m.n)));
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    (sub, seen)
}

async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

async fn publish_in_commits_with_the_transaction(backend: &str) {
    let bus = support::bus(backend).await;
    let t = topic("txn");
    let (sub, seen) = collect(&bus, &t, "s", quick()).await;
    match backend {
        "postgres" => {
            let pool = sqlx::PgPool::connect(&support::pg_url()).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            tidings_sql::publish_in(&bus, &mut *tx, &t, &Job { n: 1 }).await.unwrap();
            tx.rollback().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            tidings_sql::publish_in(&bus, &mut *tx, &t, &Job { n: 2 }).await.unwrap();
            assert!(!eventually(1, || !seen.lock().unwrap().is_empty()).await, "nothing visible before commit");
            tx.commit().await.unwrap();
        }
        _ => {
            let pool =
                sqlx::SqlitePool::connect(&format!("sqlite://{}", support::sqlite_path().display())).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            tidings_sql::publish_in(&bus, &mut *tx, &t, &Job { n: 1 }).await.unwrap();
            tx.rollback().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            tidings_sql::publish_in(&bus, &mut *tx, &t, &Job { n: 2 }).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
    assert!(eventually(20, || !seen.lock().unwrap().is_empty()).await, "the committed message arrives");
    assert!(sub.wait_idle(Duration::from_secs(20)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*seen.lock().unwrap(), vec![2], "the rolled-back message never arrives");
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_publish_in_commits_with_the_transaction() {
    publish_in_commits_with_the_transaction("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_publish_in_commits_with_the_transaction() {
    publish_in_commits_with_the_transaction("postgres").await;
}

/// Messages accepted while no consumer runs survive the backend being dropped and opened again, with exact
/// backlog and DLQ depth on the way.
async fn restart_loses_nothing(backend: &str) {
    let t = topic("restart");
    let bus = support::bus(backend).await;
    let (sub, _) = collect(&bus, &t, "s", quick()).await;
    sub.shutdown(Duration::from_secs(5)).await;
    for n in 0..50 {
        t.publish(&bus, &Job { n }).await.unwrap();
    }
    t.publish(&bus, &Job { n: 1000 }).await.unwrap();
    assert_eq!(sub.backlog().await.unwrap(), Some(51), "exact backlog");
    bus.shutdown(Duration::from_secs(5)).await;
    drop((sub, bus));

    let bus = support::bus(backend).await;
    let (sub, seen) = collect(&bus, &t, "s", quick()).await;
    assert!(sub.wait_idle(Duration::from_secs(30)).await.unwrap(), "everything settled after the restart");
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (0..50).chain([1000]).collect::<Vec<_>>());
    let dead = sub.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("job 1000 is poison"), "{}", dead[0].reason);
    assert_eq!(sub.backlog().await.unwrap(), Some(0));
    let resource = bus.settings().subscription_resource_name(t.name(), "s");
    let b = match backend {
        "postgres" => support::pg_backend().await,
        _ => support::sqlite_backend().await,
    };
    assert_eq!(b.dead_letter_depth(&resource, &bus.settings().resource_name(t.name())).await.unwrap(), 1);
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restart_loses_nothing_accepted() {
    restart_loses_nothing("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_loses_nothing_accepted() {
    restart_loses_nothing("postgres").await;
}

/// Undelivered messages older than the subscription's retention are dropped, and leave the backlog.
async fn retention_expiry(backend: &str) {
    let t = topic("retention");
    let bus = support::bus(backend).await;
    let cfg = quick().with_message_retention(Duration::from_secs(1));
    let (sub, _) = collect(&bus, &t, "s", cfg).await;
    sub.shutdown(Duration::from_secs(5)).await;
    t.publish(&bus, &Job { n: 1 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (sub, seen) = collect(&bus, &t, "s", cfg).await;
    assert!(sub.wait_idle(Duration::from_secs(20)).await.unwrap(), "the expired message left the backlog");
    assert!(seen.lock().unwrap().is_empty(), "an expired message is never delivered");
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retention_expiry_drops_undelivered_messages() {
    retention_expiry("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retention_expiry_drops_undelivered_messages() {
    retention_expiry("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_incompatible_schema_version_is_a_clear_error() {
    let path = std::env::temp_dir().join(format!("tidings-sql-version-{}", support::unique())).join("bus.db");
    drop(SqlBackend::sqlite(SqliteConfig::at(&path)).await.unwrap());
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query("UPDATE tidings_schema_version SET version = 99").execute(&pool).await.unwrap();
    pool.close().await;
    let e = SqlBackend::sqlite(SqliteConfig::at(&path)).await.unwrap_err().to_string();
    assert!(e.contains("schema version 99") && e.contains("version 1") && e.contains("incompatible"), "{e}");
    let mut verify = SqliteConfig::at(&path);
    verify.provisioning = Provisioning::Verify;
    let e = SqlBackend::sqlite(verify).await.unwrap_err().to_string();
    assert!(e.contains("schema version 99"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_incompatible_schema_version_is_a_clear_error() {
    support::require_pg().await;
    let schema = format!("tidings_test_{}v", support::unique());
    let config = PostgresConfig::at(support::pg_url(), schema.clone());
    drop(SqlBackend::postgres(config.clone()).await.unwrap());
    let pool = sqlx::PgPool::connect(&support::pg_url()).await.unwrap();
    sqlx::query(&format!("UPDATE {schema}.schema_version SET version = 99")).execute(&pool).await.unwrap();
    let e = SqlBackend::postgres(config.clone()).await.unwrap_err().to_string();
    assert!(e.contains("schema version 99") && e.contains(&schema) && e.contains("incompatible"), "{e}");
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&pool).await.unwrap();
    let mut verify = config;
    verify.provisioning = Provisioning::Verify;
    let e = SqlBackend::postgres(verify).await.unwrap_err().to_string();
    assert!(
        e.contains("no tidings tables") && e.contains("auto") && e.contains("/backends/sql.html#permissions"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_path_that_cannot_be_created_is_named() {
    let file = std::env::temp_dir().join(format!("tidings-sql-file-{}", support::unique()));
    std::fs::write(&file, b"not a directory").unwrap();
    let path = file.join("sub").join("bus.db");
    let e = SqlBackend::sqlite(SqliteConfig::at(&path)).await.unwrap_err().to_string();
    assert!(e.contains("sqlite.path") && e.contains(&path.display().to_string()), "{e}");
    let mut missing = SqliteConfig::at(file.with_extension("db"));
    missing.provisioning = Provisioning::Verify;
    let e = SqlBackend::sqlite(missing).await.unwrap_err().to_string();
    assert!(e.contains("sqlite.path") && e.contains("cannot open"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_at_start_is_retried_then_a_clear_error() {
    let config = PostgresConfig::at("postgres://postgres@127.0.0.1:1/test", "tidings");
    let e = SqlBackend::postgres(config).await.unwrap_err();
    assert!(e.is_retryable());
    let m = e.to_string();
    assert!(m.contains("127.0.0.1:1/test") && m.contains("retried"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facade_settings_pick_the_dialect() {
    let e = SqlBackend::from_settings(&tidings_core::Settings::from_toml("backend = \"local\"").unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"local\"") && e.contains("sqlite, postgres"), "{e}");
    let b = SqlBackend::from_settings(&support::settings("sqlite")).await.unwrap();
    assert_eq!(tidings_core::Backend::name(&b), "sqlite");
}

/// `publish_in_with` carries a due time (delayed delivery is native here): the committed row stays invisible until
/// then, and is delivered soon after.
async fn publish_in_carries_the_due_time(backend: &str) {
    let bus = support::bus(backend).await;
    let t = topic("txn-delay");
    let (_sub, seen) = collect(&bus, &t, "s", quick()).await;
    let due = std::time::SystemTime::now() + Duration::from_secs(2);
    let opts = || tidings_core::PublishOptions::new().deliver_at(due);
    match backend {
        "postgres" => {
            let pool = sqlx::PgPool::connect(&support::pg_url()).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            tidings_sql::publish_in_with(&bus, &mut *tx, &t, &Job { n: 1 }, opts()).await.unwrap();
            tx.commit().await.unwrap();
        }
        _ => {
            let pool =
                sqlx::SqlitePool::connect(&format!("sqlite://{}", support::sqlite_path().display())).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            tidings_sql::publish_in_with(&bus, &mut *tx, &t, &Job { n: 1 }, opts()).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
    let early =
        due.duration_since(std::time::SystemTime::now()).unwrap_or_default().saturating_sub(Duration::from_millis(100));
    tokio::time::sleep(early).await;
    assert!(seen.lock().unwrap().is_empty(), "nothing before the due time");
    assert!(eventually(10, || !seen.lock().unwrap().is_empty()).await, "delivered after the due time");
    assert!(std::time::SystemTime::now() >= due);
    assert_eq!(*seen.lock().unwrap(), vec![1]);
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_publish_in_carries_the_due_time() {
    publish_in_carries_the_due_time("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_publish_in_carries_the_due_time() {
    publish_in_carries_the_due_time("postgres").await;
}
