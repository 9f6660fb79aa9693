//! A delayed message held in the subscribing process goes back to Pub/Sub whenever that process stops, and the
//! service counts each such delivery against the subscription's dead-letter policy (`max_delivery_attempts`, the
//! attempts, at least 5). Held through more restarts than that, it must still be handled once, at its due time, as
//! attempt 1, and never dead-lettered: the runtime replaces a delivery counted as often as the attempts by a fresh copy.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Message, PublishOptions, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Serialize, Deserialize, Clone)]
struct Reminder {
    n: u64,
}

fn config() -> SubscriptionConfig {
    SubscriptionConfig::DEFAULT
        .with_ack_deadline(Duration::from_secs(10))
        .with_retry(RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(2)).with_max_retries(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_held_through_more_restarts_than_attempts_is_handled_once() {
    let (attempt, late) = held_through_restarts(support::config).await;
    assert_eq!(attempt, 1, "as attempt 1 ({late:?} after its due time)");
}

/// The same on Google's stock emulator. There each stopped process leaves its stream behind as a ghost consumer (see
/// the GCP page), which takes a share of what the subscription hands out, the due copy too, and holds it for the ack
/// deadline before it is handed out again, perhaps to another ghost: so the copy reaches the handler as a later
/// attempt, ack deadlines late (measured: attempt 4, 38 s late, with six ghosts). What this test is about holds there
/// as well when the ghosts let it through in time: handled once, never early, nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the stock emulator's ghost consumers (streams of stopped processes) take and hold deliveries for an ack \
            deadline each, so after six restarts the message comes ack deadlines late or not within the test's \
            patience (2026-12-08: once attempt 4, 38 s late; once not within 60 s); the conformance suite's restart \
            cases are gated off there for the same reason"]
async fn on_the_stock_emulator_too_a_message_held_through_restarts_is_handled_once() {
    let (attempt, late) = held_through_restarts(support::stock_config).await;
    eprintln!("stock emulator: handled as attempt {attempt}, {late:?} after its due time");
}

/// Publishes a message due in 25 s, stops and restarts its subscribing process six times while it is held, and checks
/// that it is handled once, not before its due time, and not dead-lettered; returns the attempt it was handled as and
/// how late after its due time.
async fn held_through_restarts(config_of: fn() -> tidings_gcp::GcpConfig) -> (u32, Duration) {
    let name: &'static str = Box::leak(format!("held-restarts-{}", uuid::Uuid::now_v7().simple()).into_boxed_str());
    let topic = Topic::<Reminder>::new(name, TopicConfig::at_least_once());
    let got: Arc<Mutex<Vec<(u32, SystemTime)>>> = Arc::default();
    let t = &topic;
    let subscribe = |bus: Bus| {
        let (g, topic) = (got.clone(), t);
        async move {
            let sub = bus
                .subscribe(topic, "sub", config(), move |m: Message<Reminder>| {
                    g.lock().unwrap().push((m.meta.attempt, SystemTime::now()));
                    async { Ok(()) }
                })
                .await
                .unwrap();
            (bus, sub)
        }
    };
    let (mut bus, mut sub) = subscribe(Bus::new(Arc::new(support::backend(config_of()).await))).await;
    let due = SystemTime::now() + Duration::from_secs(25);
    topic.publish_with(&bus, &Reminder { n: 1 }, PublishOptions::new().deliver_at(due)).await.unwrap();
    // Six stops while it is held (each hands it back to the service, a delivery counted), the dead-letter policy's 5
    // deliveries and one more.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        bus.shutdown(Duration::from_secs(5)).await;
        (bus, sub) = subscribe(Bus::new(Arc::new(support::backend(config_of()).await))).await;
    }
    assert!(got.lock().unwrap().is_empty(), "handled before its due time");
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().is_empty() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // a second delivery (none expected) would come by now
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "handled once: {got:?}");
    let late = got[0].1.duration_since(due).expect("not before its due time");
    assert!(sub.dead_letters(10).await.unwrap().is_empty(), "nothing dead-lettered");
    bus.shutdown(Duration::from_secs(5)).await;
    (got[0].0, late)
}
