//! README's first example, whole: a typed topic, a subscription with a handler, a publish, on the bus configuration
//! names (the in-memory bus when nothing is configured). `cargo run --example quickstart`; README's Rust blocks are
//! excerpts of this file (tests/book.rs checks that they still are), and the test command runs it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::{Message, SubscriptionConfig, Topic, TopicConfig};

#[derive(Serialize, Deserialize)]
pub struct SignupEvent {
    pub user_id: u64,
    pub email: String,
}

pub static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());

#[tokio::main]
async fn main() -> tidings::Result<()> {
    let bus = tidings::from_env().await?;

    let email = bus
        .subscribe(&SIGNUPS, "email", SubscriptionConfig::default(), |m: Message<SignupEvent>| async move {
            println!("welcome email to user {} at {}", m.user_id, m.email); // Ok acks; Err retries, then DLQ
            Ok(())
        })
        .await?;

    SIGNUPS.publish(&bus, &SignupEvent { user_id: 42, email: "ada@example.com".into() }).await?;

    // Wait until the email subscription has handled it (quiet for 1 s), then stop.
    email.wait_quiet(Duration::from_secs(1), Duration::from_secs(30)).await?;
    bus.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
