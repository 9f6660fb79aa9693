//! The reference story: a user service records signups in its own SQLite database and, in the same transaction,
//! writes a `SignupEvent` to the transactional outbox, which a relay publishes; an email
//! service (a provider that takes 3 s) and an analytics service (a warehouse that is down for the first two
//! attempts) each subscribe independently. One event can never be recorded and ends in the dead-letter queue. The
//! analytics service records each signup in its warehouse exactly once, through the transactional inbox.
//! The same transaction schedules a "how was your first day?" email, delivered 5 s after the signup (a day, scaled
//! down for the demo) on every backend.
//!
//! Run: `cargo run --example signup`. The backend comes only from configuration (`TIDINGS_BACKEND`, `tidings.toml`),
//! so the same binary runs on every backend.
//!
//! With `--features opentelemetry` it also serves tidings' metrics for Prometheus (`http://127.0.0.1:9464/metrics`,
//! `SIGNUP_METRICS_ADDR`; `SIGNUP_LINGER=60` keeps it up a minute after the story) and exports
//! spans: to an OTLP/HTTP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, otherwise the trace of the signup that
//! ends in the dead-letter queue is printed at the end (see `examples/support/telemetry.rs`).

#[cfg(feature = "opentelemetry")]
#[path = "support/telemetry.rs"]
mod telemetry;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use tidings::{HandlerError, Message, PublishOptions, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};
use tidings_inbox::Inbox;
use tidings_outbox::Outbox;
use tracing::Instrument;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignupEvent {
    pub user_id: u64,
    pub email: String,
}

pub static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());

/// The "how was your first day?" email, scheduled at signup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirstDay {
    pub user_id: u64,
    pub email: String,
}

pub static FIRST_DAY: Topic<FirstDay> = Topic::new("first-day", TopicConfig::at_least_once());

/// How long after a signup the first-day email goes out: a day in production, 5 s in the demo.
const FIRST_DAY_AFTER: Duration = Duration::from_secs(5);

/// The user service: its own SQLite store; the user row, the event and the scheduled first-day email commit in one
/// transaction.
struct UserService {
    db: SqlitePool,
    outbox: Outbox<sqlx::Sqlite>,
}

impl UserService {
    async fn register(&self, user_id: u64, email: &str) -> Result<tidings::MessageId, Box<dyn std::error::Error>> {
        let mut tx = self.db.begin().await?;
        sqlx::query("INSERT INTO users (id, email) VALUES (?, ?)")
            .bind(user_id as i64)
            .bind(email)
            .execute(&mut *tx)
            .await?;
        let id = self.outbox.publish(&mut tx, &SIGNUPS, &SignupEvent { user_id, email: email.to_string() }).await?;
        let first_day = FirstDay { user_id, email: email.to_string() };
        let later = PublishOptions::new().deliver_after(FIRST_DAY_AFTER);
        self.outbox.publish_with(&mut tx, &FIRST_DAY, &first_day, later).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn count(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&self.db).await
    }
}

fn say(start: Instant, who: &str, what: String) {
    println!("[{:>6} ms] {who:<10} {what}", start.elapsed().as_millis());
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "opentelemetry")]
    let telemetry = telemetry::init().await?;
    #[cfg(not(feature = "opentelemetry"))]
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .init();
    let start = Instant::now();
    #[cfg(feature = "opentelemetry")]
    if let Some(addr) = telemetry.metrics {
        say(start, "metrics", format!("Prometheus endpoint: http://{addr}/metrics"));
    }
    let bus = tidings::from_env().await?;
    say(start, "bus", format!("backend: {}", bus.backend_name()));

    // Short backoffs so the story finishes in seconds; production code keeps the defaults (10 s .. 10 min).
    let retry = RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(1)).with_max_retries(3);
    let config = SubscriptionConfig::default().with_retry(retry);

    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    bus.subscribe(&SIGNUPS, "email", config, move |m: Message<SignupEvent>| {
        let s = s.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await; // a slow email provider
            say(start, "email", format!("welcome email sent to {} (attempt {})", m.email, m.attempt()));
            s.fetch_add(1, SeqCst);
            Ok(())
        }
    })
    .await?;

    // The same email service sends the first-day email, no earlier than FIRST_DAY_AFTER after the signup.
    let signed_up: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let first_days = Arc::new(AtomicUsize::new(0));
    let early = Arc::new(AtomicUsize::new(0));
    let (signed, f, e) = (signed_up.clone(), first_days.clone(), early.clone());
    bus.subscribe(&FIRST_DAY, "email", config, move |m: Message<FirstDay>| {
        let after = signed.lock().unwrap().get(&m.user_id).map(Instant::elapsed);
        let (f, e) = (f.clone(), e.clone());
        async move {
            let after = after.ok_or_else(|| HandlerError::retry("the signup is not recorded yet"))?;
            say(
                start,
                "email",
                format!(
                    "first-day email sent to {}, {:.1} s after signup (attempt {})",
                    m.email,
                    after.as_secs_f64(),
                    m.attempt()
                ),
            );
            if after < FIRST_DAY_AFTER {
                e.fetch_add(1, SeqCst);
            }
            f.fetch_add(1, SeqCst);
            Ok(())
        }
    })
    .await?;

    // The analytics service records each signup in its warehouse (its own SQLite database here) exactly once,
    // through the transactional inbox: the warehouse row and the inbox's record of the message commit together, so a
    // signup delivered again is skipped.
    let warehouse_path = std::env::temp_dir().join(format!("tidings-signup-warehouse-{}.db", std::process::id()));
    let warehouse = SqliteConnectOptions::from_str(&format!("sqlite://{}", warehouse_path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let warehouse = SqlitePool::connect_with(warehouse).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS signups (user_id INTEGER NOT NULL, email TEXT NOT NULL)")
        .execute(&warehouse)
        .await?;
    let recorded =
        || async { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM signups").fetch_one(&warehouse).await };
    let analytics = Inbox::sqlite(warehouse.clone())
        .subscribe(&bus, &SIGNUPS, "analytics", config, move |m: Message<SignupEvent>, mut tx| {
            async move {
                if m.email.ends_with(".invalid") {
                    say(
                        start,
                        "analytics",
                        format!("cannot record {}: malformed row (attempt {})", m.email, m.attempt()),
                    );
                    return Err(HandlerError::retry("warehouse rejected the row: malformed email domain"));
                }
                if m.attempt() <= 2 {
                    say(
                        start,
                        "analytics",
                        format!("warehouse down, user {} will be retried (attempt {})", m.user_id, m.attempt()),
                    );
                    return Err(HandlerError::retry("warehouse down"));
                }
                sqlx::query("INSERT INTO signups (user_id, email) VALUES (?, ?)")
                    .bind(m.user_id as i64)
                    .bind(&m.email)
                    .execute(&mut *tx)
                    .await?;
                say(start, "analytics", format!("recorded signup of user {} (attempt {})", m.user_id, m.attempt()));
                Ok(tx) // the inbox commits the row, then acks
            }
        })
        .await?;

    let path = std::env::temp_dir().join(format!("tidings-signup-{}.db", std::process::id()));
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let db = SqlitePool::connect_with(options).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT NOT NULL)").execute(&db).await?;
    let outbox = Outbox::new(db.clone(), bus.clone());
    outbox.migrate().await?;
    let relay = outbox.relay().spawn();
    let users = UserService { db, outbox };
    let signups = [(1, "ada@example.com"), (2, "grace@example.com"), (3, "mallory@example.invalid")];
    for (id, email) in signups {
        let t = Instant::now();
        signed_up.lock().unwrap().insert(id, t);
        // The request's span: the outbox row captures its trace context, so the handlers' spans join this trace.
        let msg_id = users.register(id, email).instrument(tracing::info_span!("signup", user.id = id as i64)).await?;
        say(
            start,
            "users",
            format!(
                "signup of {email} stored and answered in {:.2} ms (message {msg_id})",
                t.elapsed().as_secs_f64() * 1000.0
            ),
        );
    }

    // Wait (at most 60 s) until both good users are recorded, every email (the first-day ones too) is out and the
    // bad event is dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let dead = analytics.dead_letters(10).await?;
        let emails = sent.load(SeqCst) == signups.len() && first_days.load(SeqCst) == signups.len();
        if emails && recorded().await? == 2 && dead.len() == 1 {
            break dead;
        }
        if Instant::now() > deadline {
            return Err("the story did not finish within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for d in &dead {
        let event: SignupEvent = d.decode()?;
        say(
            start,
            "dlq",
            format!("analytics DLQ: user {} after {} attempts, reason: {}", event.user_id, d.attempts, d.reason),
        );
    }
    relay.shutdown().await;
    bus.shutdown(Duration::from_secs(5)).await;
    let stored = users.count().await?;
    users.db.close().await;
    let recorded = recorded().await?;
    let once: i64 = sqlx::query_scalar("SELECT count(DISTINCT user_id) FROM signups").fetch_one(&warehouse).await?;
    warehouse.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        let _ = std::fs::remove_file(format!("{}{suffix}", warehouse_path.display()));
    }
    if once != recorded {
        return Err(format!("the warehouse holds {recorded} rows for {once} signups: recorded more than once").into());
    }
    if early.load(SeqCst) > 0 {
        return Err(format!("{} first-day emails went out before their time", early.load(SeqCst)).into());
    }
    let (sent, first_days) = (sent.load(SeqCst), first_days.load(SeqCst));
    say(
        start,
        "bus",
        format!(
            "done: {stored} users stored, {sent} welcome and {first_days} first-day emails sent, {recorded} signups \
             recorded, {} dead letter",
            dead.len()
        ),
    );
    #[cfg(feature = "opentelemetry")]
    telemetry.finish(3).await?;
    Ok(())
}
