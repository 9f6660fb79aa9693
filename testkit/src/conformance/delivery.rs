//! Delivery: a message and its metadata arrive, batches keep their ids, every subscription gets its copy, an ack
//! removes the message, and a subscription gets quiet once everything is handled.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::support::{logging, sub_config, topic, Event, Log};
use super::Harness;
use tidings_core::{ErrorKind, Message, PublishOptions, TopicConfig};

pub async fn round_trip_with_attributes_and_metadata<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("round-trip", TopicConfig::at_least_once());
    let log = Log::default();
    bus.subscribe(&topic, "sub", sub_config(&t, 5), logging(&log)).await.unwrap();
    let before = SystemTime::now() - Duration::from_secs(5);
    let opts = PublishOptions::new().attribute("source", "web").attribute("tenant", "acme");
    let id = topic.publish_with(&bus, &Event::new(1), opts).await.unwrap();
    let got = log.wait_for(1, t.patience).await;
    assert_eq!(got.len(), 1, "one delivery expected");
    let d = &got[0];
    assert_eq!(d.event, Event::new(1));
    assert_eq!(d.meta.id, id, "metadata carries the id publish returned");
    assert_eq!(d.meta.attempt, 1, "first delivery is attempt 1");
    let expected: BTreeMap<String, String> =
        [("source", "web"), ("tenant", "acme")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(d.meta.attributes, expected);
    assert_eq!(d.meta.ordering_key, None);
    assert!(d.meta.publish_time >= before && d.meta.publish_time <= SystemTime::now() + Duration::from_secs(5));
    bus.shutdown(t.patience).await;
}

pub async fn publish_batch_returns_ids_in_order<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("batch", TopicConfig::at_least_once());
    let log = Log::default();
    bus.subscribe(&topic, "sub", sub_config(&t, 5), logging(&log)).await.unwrap();
    let events: Vec<Event> = (0..25).map(Event::new).collect();
    let ids = topic.publish_batch(&bus, events.iter().map(|e| (e, PublishOptions::new()))).await.unwrap();
    assert_eq!(ids.len(), 25);
    let got = log.wait_for(25, t.patience).await;
    assert_eq!(got.len(), 25);
    for d in got {
        assert_eq!(ids[d.event.n as usize], d.meta.id, "id of event {} matches its position", d.event.n);
    }
    bus.shutdown(t.patience).await;
}

pub async fn only_messages_published_after_subscribing<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("after", TopicConfig::at_least_once());
    topic.publish(&bus, &Event::new(1)).await.unwrap();
    let log = Log::default();
    bus.subscribe(&topic, "late", sub_config(&t, 5), logging(&log)).await.unwrap();
    topic.publish(&bus, &Event::new(2)).await.unwrap();
    log.wait_for(1, t.patience).await;
    tokio::time::sleep(t.ack_deadline).await;
    let ns: Vec<u64> = log.all().iter().map(|d| d.event.n).collect();
    assert_eq!(ns, vec![2], "a subscription receives only messages published after it exists");
    bus.shutdown(t.patience).await;
}

pub async fn fan_out_to_two_subscriptions<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("fan-out", TopicConfig::at_least_once());
    let (a, b) = (Log::default(), Log::default());
    bus.subscribe(&topic, "email", sub_config(&t, 5), logging(&a)).await.unwrap();
    bus.subscribe(&topic, "analytics", sub_config(&t, 5), logging(&b)).await.unwrap();
    for n in 0..10 {
        topic.publish(&bus, &Event::new(n)).await.unwrap();
    }
    for log in [&a, &b] {
        let mut ns: Vec<u64> = log.wait_for(10, t.patience).await.iter().map(|d| d.event.n).collect();
        ns.sort();
        assert_eq!(ns, (0..10).collect::<Vec<_>>(), "each subscription gets every message");
    }
    bus.shutdown(t.patience).await;
}

pub async fn independence_of_a_stalled_subscription<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("independent", TopicConfig::at_least_once());
    let stalled_calls = Arc::new(AtomicUsize::new(0));
    let calls = stalled_calls.clone();
    let stalled = bus
        .subscribe(&topic, "stalled", sub_config(&t, 5).with_max_concurrency(1), move |_m: Message<Event>| {
            calls.fetch_add(1, SeqCst);
            std::future::pending::<tidings_core::HandlerResult>()
        })
        .await
        .unwrap();
    let fast = Log::default();
    bus.subscribe(&topic, "fast", sub_config(&t, 5), logging(&fast)).await.unwrap();
    for n in 0..50 {
        topic.publish(&bus, &Event::new(n)).await.unwrap();
    }
    assert_eq!(fast.wait_for(50, t.patience).await.len(), 50, "the healthy subscription keeps flowing");
    assert_eq!(stalled_calls.load(SeqCst), 1, "the stalled subscription holds one message in its only slot");
    stalled.shutdown(Duration::from_millis(50)).await;
    bus.shutdown(t.patience).await;
}

pub async fn ack_removes_the_message<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("ack", TopicConfig::at_least_once());
    let log = Log::default();
    let sub = bus.subscribe(&topic, "sub", sub_config(&t, 5), logging(&log)).await.unwrap();
    topic.publish(&bus, &Event::new(1)).await.unwrap();
    log.wait_for(1, t.patience).await;
    tokio::time::sleep(t.ack_deadline * 2).await;
    assert_eq!(log.len(), 1, "an acked message is not delivered again");
    if let Some(b) = sub.backlog().await.unwrap() {
        assert_eq!(b, 0, "backlog is empty after the ack");
    }
    bus.shutdown(t.patience).await;
}

pub async fn waiting_until_quiet_works_on_every_backend<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("quiet", TopicConfig::at_least_once());
    let log = Log::default();
    let l = log.clone();
    let sub = bus
        .subscribe(&topic, "sub", sub_config(&t, 5).with_max_concurrency(3), move |m: Message<Event>| {
            let l = l.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                l.record(&m);
                Ok(())
            }
        })
        .await
        .unwrap();
    for n in 0..10 {
        topic.publish(&bus, &Event::new(n)).await.unwrap();
    }
    // Quiet: nothing in flight and nothing received for an ack deadline (well above the brokers' delivery latency).
    assert!(sub.wait_quiet(t.ack_deadline, t.patience * 2).await.unwrap(), "the subscription got quiet");
    assert_eq!(log.len(), 10, "quiet only once every message was handled");
    let backlog = sub.backlog().await.unwrap();
    assert_eq!(backlog.is_some(), bus.capabilities().backlog, "Capabilities::backlog says whether backlog is known");
    match backlog {
        Some(b) => {
            assert_eq!(b, 0, "nothing left");
            assert!(sub.wait_idle(t.patience).await.unwrap(), "wait_idle works where the backlog is known");
        }
        None => {
            let e = sub.wait_idle(t.patience).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.to_string().contains("Capabilities::backlog") && e.to_string().contains("wait_quiet"), "{e}");
        }
    }
    bus.shutdown(t.patience).await;
}
