//! The signup story as separate processes that talk through one SQLite file (or one PostgreSQL database), with no
//! broker and no relay: the user service writes each user and its `SignupEvent` in one transaction of its own
//! (`tidings::sql::publish_in`), the email and analytics services are processes of their own.
//!
//! ```text
//! export TIDINGS_BACKEND=sqlite            # the bus is .tidings/bus.db (TIDINGS_SQLITE__PATH to move it)
//! cargo run --features sqlite --example signup_roles -- --role email &
//! cargo run --features sqlite --example signup_roles -- --role analytics &
//! cargo run --features sqlite --example signup_roles -- --role users
//! ```
//!
//! Start the subscribers first: a message reaches the subscriptions that exist when it is published (they are
//! durable: a subscriber that stops and comes back gets what was published meanwhile). `--count N` makes a
//! subscriber exit after settling N messages (the test command uses it); without it, Ctrl-C stops it gracefully.
//! With `TIDINGS_BACKEND=postgres` (and `--features postgres`) the same processes share a PostgreSQL database.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::{HandlerError, Message, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignupEvent {
    pub user_id: i64,
    pub email: String,
}

pub static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let role = arg("--role").ok_or("usage: signup_roles --role users|email|analytics [--count N]")?;
    let count: Option<usize> = arg("--count").map(|c| c.parse()).transpose()?;
    let bus = tidings::from_env().await?;
    match role.as_str() {
        "users" => users(&bus).await?,
        "email" | "analytics" => subscriber(&bus, &role, count).await?,
        other => return Err(format!("--role {other:?}: expected users, email or analytics").into()),
    }
    bus.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

const SIGNUPS_TO_MAKE: [&str; 3] = ["ada@example.com", "grace@example.com", "mallory@example.invalid"];

/// The user service: its `users` table lives in the bus's database, so the row and the event commit together.
async fn users(bus: &tidings::Bus) -> Result<(), BoxError> {
    match bus.backend_name() {
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let path = bus.settings().section::<tidings::sql::SqliteConfig>("sqlite")?.path;
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let db = sqlx::SqlitePool::connect_with(options).await?;
            sqlx::query("CREATE TABLE IF NOT EXISTS signup_users (id INTEGER PRIMARY KEY, email TEXT NOT NULL)")
                .execute(&db)
                .await?;
            for email in SIGNUPS_TO_MAKE {
                let mut tx = db.begin().await?;
                let id: i64 = sqlx::query_scalar("INSERT INTO signup_users (email) VALUES ($1) RETURNING id")
                    .bind(email)
                    .fetch_one(&mut *tx)
                    .await?;
                let event = SignupEvent { user_id: id, email: email.into() };
                let msg = tidings::sql::publish_in(bus, &mut *tx, &SIGNUPS, &event).await?;
                tx.commit().await?;
                println!("users      stored user {id} ({email}) and its event {msg} in one transaction");
            }
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let url = bus.settings().section::<tidings::sql::PostgresConfig>("postgres")?.resolved_url();
            let db = sqlx::PgPool::connect(&url).await?;
            sqlx::query("CREATE TABLE IF NOT EXISTS signup_users (id BIGSERIAL PRIMARY KEY, email TEXT NOT NULL)")
                .execute(&db)
                .await?;
            for email in SIGNUPS_TO_MAKE {
                let mut tx = db.begin().await?;
                let id: i64 = sqlx::query_scalar("INSERT INTO signup_users (email) VALUES ($1) RETURNING id")
                    .bind(email)
                    .fetch_one(&mut *tx)
                    .await?;
                let event = SignupEvent { user_id: id, email: email.into() };
                let msg = tidings::sql::publish_in(bus, &mut *tx, &SIGNUPS, &event).await?;
                tx.commit().await?;
                println!("users      stored user {id} ({email}) and its event {msg} in one transaction");
            }
        }
        other => return Err(format!("--role users needs TIDINGS_BACKEND=sqlite or postgres, not {other:?}").into()),
    }
    Ok(())
}

/// The email or analytics service. Analytics' warehouse is down for the first attempt of each event, and can never
/// record a `.invalid` address (that one ends in its dead-letter queue).
async fn subscriber(bus: &tidings::Bus, role: &str, count: Option<usize>) -> Result<(), BoxError> {
    let retry = RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(1)).with_max_retries(2);
    let config = SubscriptionConfig::default().with_retry(retry);
    let settled = Arc::new(AtomicUsize::new(0));
    let (s, analytics, who) = (settled.clone(), role == "analytics", role.to_string());
    let sub = bus
        .subscribe(&SIGNUPS, role, config, move |m: Message<SignupEvent>| {
            let (s, who) = (s.clone(), who.clone());
            async move {
                let exhausted = m.attempt() > 2;
                if analytics && m.email.ends_with(".invalid") {
                    println!("analytics  cannot record {} (attempt {})", m.email, m.attempt());
                    if exhausted {
                        s.fetch_add(1, SeqCst);
                    }
                    return Err(HandlerError::retry("warehouse rejected the row: malformed email domain"));
                }
                if analytics && m.attempt() == 1 {
                    println!("analytics  warehouse down, user {} will be retried", m.user_id);
                    return Err(HandlerError::retry("warehouse down"));
                }
                let what = if analytics { "recorded signup of" } else { "welcome email sent to" };
                println!("{who:<10} {what} user {} <{}> (attempt {})", m.user_id, m.email, m.attempt());
                s.fetch_add(1, SeqCst);
                Ok(())
            }
        })
        .await?;
    println!("{role:<10} ready (backend {})", bus.backend_name());
    match count {
        Some(n) => {
            while settled.load(SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sub.wait_idle(Duration::from_secs(10)).await?;
        }
        None => tokio::signal::ctrl_c().await?,
    }
    for d in sub.dead_letters(10).await? {
        let e: SignupEvent = d.decode()?;
        println!("{role:<10} dead letter: user {} after {} attempts: {}", e.user_id, d.attempts, d.reason);
    }
    Ok(())
}
