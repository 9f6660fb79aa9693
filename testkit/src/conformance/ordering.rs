//! The capability-gated delivery promises: per-key order (`ordering`) and deduplication by id (`exactly_once`).
#![allow(missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::support::{self, logging, sub_config, topic, wait_until, Event, Log};
use super::Harness;
use tidings_core::{HandlerError, Message, PublishOptions, TopicConfig};

pub async fn ordering_per_key<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    support::require(&bus, bus.capabilities().ordering, "ordering_per_key", "ordering");
    let topic = topic::<Event>("ordered", TopicConfig::at_least_once().ordered());
    let handled: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let in_flight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let overlap = Arc::new(AtomicBool::new(false));
    let (hd, inf, ov) = (handled.clone(), in_flight.clone(), overlap.clone());
    bus.subscribe(&topic, "sub", sub_config(&t, 5).with_max_concurrency(8), move |m: Message<Event>| {
        let key = m.meta.ordering_key.clone().unwrap();
        let (hd, inf, ov) = (hd.clone(), inf.clone(), ov.clone());
        async move {
            {
                let mut f = inf.lock().unwrap();
                let c = f.entry(key.clone()).or_default();
                *c += 1;
                if *c > 1 {
                    ov.store(true, SeqCst);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            inf.lock().unwrap().entry(key.clone()).and_modify(|c| *c -= 1);
            // Every third message of a key fails once (not every one, so a redelivery that went behind later
            // messages of its key would show up as out of order).
            if (m.n / 10) % 3 == 1 && m.attempt() == 1 {
                return Err(HandlerError::retry("transient"));
            }
            hd.lock().unwrap().entry(key).or_default().push(m.n);
            Ok(())
        }
    })
    .await
    .unwrap();
    let per_key = 12u64;
    for i in 0..per_key {
        for key in ["alice", "bob", "carol"] {
            let n = i * 10 + (key.len() as u64 % 10);
            topic.publish_with(&bus, &Event::new(n), PublishOptions::new().ordering_key(key)).await.unwrap();
        }
    }
    let total = 3 * per_key as usize;
    assert!(
        wait_until(t.patience * 2, || handled.lock().unwrap().values().map(Vec::len).sum::<usize>() >= total).await,
        "all ordered messages handled"
    );
    for (key, ns) in handled.lock().unwrap().iter() {
        let mut sorted = ns.clone();
        sorted.sort();
        assert_eq!(ns, &sorted, "key {key}: handled in publish order, retries included");
        assert_eq!(ns.len(), per_key as usize);
    }
    assert!(!overlap.load(SeqCst), "two messages of one key were never in flight at once");
    bus.shutdown(t.patience).await;
}

pub async fn exactly_once_dedup<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    support::require(&bus, bus.capabilities().exactly_once, "exactly_once_dedup", "exactly_once");
    let topic = topic::<Event>("exactly-once", TopicConfig::exactly_once());
    let log = Log::default();
    bus.subscribe(&topic, "sub", sub_config(&t, 5), logging(&log)).await.unwrap();
    let id = topic.publish(&bus, &Event::new(1)).await.unwrap();
    let again = topic.publish_with(&bus, &Event::new(1), PublishOptions::new().id(id.clone())).await.unwrap();
    assert_eq!(again, id, "a republish keeps its id");
    log.wait_for(1, t.patience).await;
    topic.publish_with(&bus, &Event::new(1), PublishOptions::new().id(id.clone())).await.unwrap();
    topic.publish(&bus, &Event::new(2)).await.unwrap();
    log.wait_for(2, t.patience).await;
    tokio::time::sleep(t.ack_deadline * 2).await;
    let ns: Vec<u64> = log.all().iter().map(|d| d.event.n).collect();
    assert_eq!(ns, vec![1, 2], "a republished id is delivered once, before and after its ack");
    bus.shutdown(t.patience).await;
}
