//! The reference story: a user service records signups and publishes a `SignupEvent` per registration; an email
//! service (a provider that takes 3 s) and an analytics service (a warehouse that is down for the first two
//! attempts) each subscribe independently. One event can never be recorded and ends in the dead-letter queue.
//!
//! Run: `cargo run --example signup`. The backend comes only from configuration (`TIDINGS_BACKEND`, `tidings.toml`),
//! so the same binary runs on every backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tidings::{HandlerError, Message, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignupEvent {
    pub user_id: u64,
    pub email: String,
}

pub static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());

/// The user service: its own store, and one event per registration.
struct UserService {
    bus: tidings::Bus,
    users: Mutex<HashMap<u64, String>>,
}

impl UserService {
    async fn register(&self, user_id: u64, email: &str) -> tidings::Result<tidings::MessageId> {
        self.users.lock().unwrap().insert(user_id, email.to_string());
        SIGNUPS.publish(&self.bus, &SignupEvent { user_id, email: email.to_string() }).await
    }
}

fn say(start: Instant, who: &str, what: String) {
    println!("[{:>6} ms] {who:<10} {what}", start.elapsed().as_millis());
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .init();
    let start = Instant::now();
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

    let recorded = Arc::new(AtomicUsize::new(0));
    let r = recorded.clone();
    let analytics = bus
        .subscribe(&SIGNUPS, "analytics", config, move |m: Message<SignupEvent>| {
            let r = r.clone();
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
                say(start, "analytics", format!("recorded signup of user {} (attempt {})", m.user_id, m.attempt()));
                r.fetch_add(1, SeqCst);
                Ok(())
            }
        })
        .await?;

    let users = UserService { bus: bus.clone(), users: Mutex::default() };
    let signups = [(1, "ada@example.com"), (2, "grace@example.com"), (3, "mallory@example.invalid")];
    for (id, email) in signups {
        let t = Instant::now();
        let msg_id = users.register(id, email).await?;
        say(
            start,
            "users",
            format!("signup of {email} answered in {:.2} ms (message {msg_id})", t.elapsed().as_secs_f64() * 1000.0),
        );
    }

    // Wait (at most 60 s) until both good users are recorded, every email is out and the bad event is dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let dead = analytics.dead_letters(10).await?;
        if sent.load(SeqCst) == signups.len() && recorded.load(SeqCst) == 2 && dead.len() == 1 {
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
    bus.shutdown(Duration::from_secs(5)).await;
    say(
        start,
        "bus",
        format!(
            "done: {} users stored, {} emails sent, {} signups recorded, {} dead letter",
            users.users.lock().unwrap().len(),
            sent.load(SeqCst),
            recorded.load(SeqCst),
            dead.len()
        ),
    );
    Ok(())
}
