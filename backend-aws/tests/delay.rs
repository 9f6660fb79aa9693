//! Delayed delivery on SQS, which core holds (SNS has no delay): a delivery received long before its due time is made
//! invisible until `Capabilities::nack_hold_lead` (3 s) before it, so whole seconds of visibility and an expiry that
//! takes effect late still bring it back early; the rest is held in process and the copy requeued at due.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: u32,
}

fn unique(base: &str) -> &'static str {
    let id = uuid::Uuid::now_v7().simple().to_string();
    Box::leak(format!("{base}-{}", &id[id.len() - 10..]).into_boxed_str())
}

/// How late after its due time the held message may start: the requeue's round trips (a `SendMessage` and the
/// receive that takes the copy), with room for a loaded machine; held until its visibility ended instead (whole
/// seconds rounded up, LocalStack's once-a-second requeue), it was up to 2 s late.
const TOLERANCE: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_held_message_comes_back_before_due_and_its_copy_is_requeued_at_due() {
    let bus = Bus::new(Arc::new(support::backend(support::config()).await));
    assert_eq!(bus.native_capabilities().nack_hold_lead, Duration::from_secs(3));
    let topic = Topic::<Event>::new(unique("held"), TopicConfig::at_least_once());
    let handled: Arc<Mutex<Vec<(SystemTime, u32)>>> = Arc::default();
    let h = handled.clone();
    let sub = bus
        .subscribe(&topic, "sub", SubscriptionConfig::default(), move |m: Message<Event>| {
            h.lock().unwrap().push((SystemTime::now(), m.attempt()));
            std::future::ready(Ok(()))
        })
        .await
        .unwrap();
    topic.publish_batch(&bus, std::iter::empty()).await.unwrap();
    let calls = || bus.api_calls().unwrap().snapshot();
    let before = calls();
    // 7 s: more than the lead and a second, so it is held by a visibility change (of 4 s) first.
    let due = SystemTime::now() + Duration::from_secs(7);
    topic.publish_with(&bus, &Event { n: 1 }, PublishOptions::new().deliver_at(due)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(7) + TOLERANCE + Duration::from_secs(10);
    while handled.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second copy (none expected) would show up within another 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = handled.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "handled once: {got:?}");
    let (at, attempt) = got[0];
    let late = at.duration_since(due).unwrap_or_else(|e| panic!("handled {:?} before its due time", e.duration()));
    eprintln!("delay lateness aws held 7 s: {} ms", late.as_millis());
    assert!(late <= TOLERANCE, "handled {late:?} after its due time (tolerance {TOLERANCE:?})");
    assert_eq!(attempt, 1, "the copy's first delivery is the first attempt");
    let after = calls();
    let delta = |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    // The hold's visibility change only: back a few seconds before due, the lease is young and not renewed before
    // the requeue (nor by the holder, whose renewals wait for a lease's first third to pass).
    assert_eq!(delta("sqs:ChangeMessageVisibilityBatch"), 1, "visibility changes: {after:?}");
    assert_eq!(delta("sqs:SendMessage"), 1, "the copy's requeue: {after:?}");
    sub.shutdown(Duration::from_secs(10)).await;
    bus.shutdown(Duration::from_secs(10)).await;
}
