//! Leases: an unsettled message comes back after its ack deadline, a running handler's lease is extended, and no more
//! handlers run at once than the subscription allows.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::support::{logging, sub_config, topic, wait_until, Event, Log};
use super::Harness;
use tidings_core::{Message, PublishOptions, TopicConfig};

pub async fn ack_deadline_expiry_redelivers<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("deadline", TopicConfig::at_least_once());
    let cfg = sub_config(&t, 5);
    // A consumer that takes the message and vanishes: raw driver, never settles, never extends.
    let spec = bus.subscription_spec(&topic, "sub", cfg);
    let vanished = bus.backend().subscription(&spec).await.unwrap();
    topic.publish(&bus, &Event::new(1)).await.unwrap();
    let taken = vanished.receive(1, t.patience).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].attempt, 1);
    let taken_at = Instant::now();
    let log = Log::default();
    bus.subscribe(&topic, "sub", cfg, logging(&log)).await.unwrap();
    let got = log.wait_for(1, t.patience + t.ack_deadline).await;
    assert_eq!(got.len(), 1, "redelivered after the ack deadline");
    assert_eq!(got[0].meta.attempt, 2);
    assert!(got[0].at - taken_at >= t.ack_deadline.mul_f64(0.9), "not before the deadline");
    bus.shutdown(t.patience).await;
}

pub async fn lease_extension_prevents_redelivery<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("lease", TopicConfig::at_least_once());
    let log = Log::default();
    let done = Arc::new(AtomicBool::new(false));
    let (l, d) = (log.clone(), done.clone());
    let slow = t.ack_deadline * 3;
    bus.subscribe(&topic, "sub", sub_config(&t, 5), move |m: Message<Event>| {
        l.record(&m);
        let d = d.clone();
        async move {
            tokio::time::sleep(slow).await;
            d.store(true, SeqCst);
            Ok(())
        }
    })
    .await
    .unwrap();
    topic.publish(&bus, &Event::new(1)).await.unwrap();
    assert!(wait_until(t.patience + slow, || done.load(SeqCst)).await);
    tokio::time::sleep(t.ack_deadline + t.max_backoff).await;
    assert_eq!(log.len(), 1, "a handler running 3x the ack deadline is delivered once");
    bus.shutdown(t.patience).await;
}

pub async fn max_concurrency_never_exceeded<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("concurrency", TopicConfig::at_least_once());
    let (now, max, done) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, m, d) = (now.clone(), max.clone(), done.clone());
    bus.subscribe(&topic, "sub", sub_config(&t, 5).with_max_concurrency(3), move |_msg: Message<Event>| {
        let (c, m, d) = (c.clone(), m.clone(), d.clone());
        async move {
            let cur = c.fetch_add(1, SeqCst) + 1;
            m.fetch_max(cur, SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.fetch_sub(1, SeqCst);
            d.fetch_add(1, SeqCst);
            Ok(())
        }
    })
    .await
    .unwrap();
    let events: Vec<Event> = (0..30).map(Event::new).collect();
    topic.publish_batch(&bus, events.iter().map(|e| (e, PublishOptions::new()))).await.unwrap();
    assert!(wait_until(t.patience, || done.load(SeqCst) == 30).await, "all handled");
    assert_eq!(max.load(SeqCst), 3, "concurrency reached the limit of 3 and never exceeded it");
    bus.shutdown(t.patience).await;
}
