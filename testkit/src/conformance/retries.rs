//! Retries: a failed attempt comes back after its backoff, and a message that keeps failing (errors, panics, poison,
//! unrecoverable errors, foreign payloads) ends in the dead-letter queue, from which it can be redriven.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::support::{logging, sub_config, topic, wait_dead_letters, wait_until, Event, Log};
use super::Harness;
use tidings_core::{HandlerError, Message, RetryPolicy, TopicConfig};

pub async fn err_redelivers_after_backoff_with_rising_attempt<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("retry", TopicConfig::at_least_once());
    let log = Log::default();
    let l = log.clone();
    bus.subscribe(&topic, "sub", sub_config(&t, 5), move |m: Message<Event>| {
        l.record(&m);
        let attempt = m.attempt();
        async move {
            if attempt < 3 {
                Err(HandlerError::retry(format!("failing attempt {attempt}")))
            } else {
                Ok(())
            }
        }
    })
    .await
    .unwrap();
    topic.publish(&bus, &Event::new(7)).await.unwrap();
    let got = log.wait_for(3, t.patience).await;
    tokio::time::sleep(t.ack_deadline).await;
    let got_after = log.all();
    assert_eq!(got_after.len(), 3, "two failures then success: exactly three deliveries");
    let attempts: Vec<u32> = got.iter().map(|d| d.meta.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3], "attempt counter rises by one per redelivery");
    for i in 1..3 {
        let gap = got[i].at - got[i - 1].at;
        // min(max_backoff, min_backoff * 2^(i-1)), written out rather than taken from RetryPolicy::backoff.
        let want = (t.min_backoff * (1 << (i - 1))).min(t.max_backoff).mul_f64(0.9);
        assert!(gap >= want, "redelivery {i} came after {gap:?}, before the backoff {want:?}");
    }
    bus.shutdown(t.patience).await;
}

fn failing(
    log: &Log,
    reason: &'static str,
) -> impl Fn(Message<Event>) -> std::future::Ready<tidings_core::HandlerResult> + Send + Sync + 'static {
    let log = log.clone();
    move |m| {
        log.record(&m);
        std::future::ready(Err(HandlerError::retry(reason)))
    }
}

pub async fn dlq_after_max_retries<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("dlq", TopicConfig::at_least_once());
    let log = Log::default();
    let sub = bus.subscribe(&topic, "sub", sub_config(&t, 2), failing(&log, "warehouse down")).await.unwrap();
    let id = topic.publish(&bus, &Event::new(1)).await.unwrap();
    let dead = wait_dead_letters(&sub, 1, t.patience).await;
    tokio::time::sleep(t.max_backoff + t.ack_deadline).await;
    let attempts: Vec<u32> = log.all().iter().map(|d| d.meta.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3], "max retries 2 means exactly 3 attempts");
    assert_eq!(dead.len(), 1, "the message is in the DLQ");
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].reason.contains("warehouse down"), "reason is the last error: {}", dead[0].reason);
    assert_eq!(dead[0].decode::<Event>().unwrap(), Event::new(1));
    if let Some(b) = sub.backlog().await.unwrap() {
        assert_eq!(b, 0, "the message left the subscription");
    }
    bus.shutdown(t.patience).await;
}

pub async fn no_retries_dead_letters_first_failure<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("no-retries", TopicConfig::at_least_once());
    let log = Log::default();
    let cfg = sub_config(&t, RetryPolicy::NO_RETRIES);
    let sub = bus.subscribe(&topic, "sub", cfg, failing(&log, "nope")).await.unwrap();
    topic.publish(&bus, &Event::new(1)).await.unwrap();
    let dead = wait_dead_letters(&sub, 1, t.patience).await;
    tokio::time::sleep(t.max_backoff + t.ack_deadline).await;
    assert_eq!(log.len(), 1, "no retries: one attempt only");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1);
    assert!(dead[0].reason.contains("nope"));
    bus.shutdown(t.patience).await;
}

pub async fn panic_counts_as_failure<H: Harness>(h: &H) {
    super::ledger::quiet_injected_panics();
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("panic", TopicConfig::at_least_once());
    let log = Log::default();
    let l = log.clone();
    let sub = bus
        .subscribe(&topic, "sub", sub_config(&t, 1), move |m: Message<Event>| {
            l.record(&m);
            let (n, attempt) = (m.n, m.attempt());
            async move {
                if n == 2 || attempt == 1 {
                    // Kept out of the output like the ledger's: printing a backtrace per panic (RUST_BACKTRACE set)
                    // takes longer than this suite's 300 ms ack deadline on a loaded machine.
                    panic!("injected panic: boom {n}");
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    topic.publish(&bus, &Event::new(1)).await.unwrap();
    topic.publish(&bus, &Event::new(2)).await.unwrap();
    let dead = wait_dead_letters(&sub, 1, t.patience).await;
    wait_until(t.patience, || log.len() >= 4).await;
    let by_n = |n| log.all().iter().filter(|d| d.event.n == n).map(|d| d.meta.attempt).collect::<Vec<_>>();
    assert_eq!(by_n(1), vec![1, 2], "a panic is retried like an error, and the process carries on");
    assert_eq!(
        by_n(2),
        vec![1, 2],
        "{:#?}",
        log.all().iter().map(|d| (d.event.n, d.meta.attempt, d.meta.id.to_string(), d.at)).collect::<Vec<_>>()
    );
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("panicked") && dead[0].reason.contains("boom 2"), "{}", dead[0].reason);
    bus.shutdown(t.patience).await;
}

/// A type that does not match [`Event`], to publish poison.
#[derive(Serialize, Deserialize)]
struct Wrong {
    unexpected: Vec<u8>,
}

pub async fn poison_message_goes_to_dlq<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("poison", TopicConfig::at_least_once());
    let wrong = tidings_core::Topic::<Wrong>::new(topic.name(), topic.config());
    let log = Log::default();
    let sub = bus.subscribe(&topic, "sub", sub_config(&t, 5), logging(&log)).await.unwrap();
    let id = wrong.publish(&bus, &Wrong { unexpected: vec![1, 2] }).await.unwrap();
    topic.publish(&bus, &Event::new(2)).await.unwrap();
    let dead = wait_dead_letters(&sub, 1, t.patience).await;
    log.wait_for(1, t.patience).await;
    assert_eq!(dead.len(), 1, "poison goes to the DLQ at once");
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].attempts, 1, "poison is not retried");
    assert!(dead[0].reason.contains("poison") && dead[0].reason.contains("decoded"), "{}", dead[0].reason);
    let ns: Vec<u64> = log.all().iter().map(|d| d.event.n).collect();
    assert_eq!(ns, vec![2], "the handler never sees poison; good messages flow");
    bus.shutdown(t.patience).await;
}

pub async fn unrecoverable_error_dead_letters_at_once<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("unrecoverable", TopicConfig::at_least_once());
    let log = Log::default();
    let l = log.clone();
    let sub = bus
        .subscribe(&topic, "sub", sub_config(&t, 100), move |m: Message<Event>| {
            l.record(&m);
            std::future::ready(Err(HandlerError::unrecoverable("invalid email address")))
        })
        .await
        .unwrap();
    topic.publish(&bus, &Event::new(1)).await.unwrap();
    let dead = wait_dead_letters(&sub, 1, t.patience).await;
    tokio::time::sleep(t.max_backoff + t.ack_deadline).await;
    assert_eq!(log.len(), 1, "unrecoverable: no retry despite 100 allowed");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("invalid email address"), "{}", dead[0].reason);
    bus.shutdown(t.patience).await;
}

pub async fn redrive_from_dlq<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("redrive", TopicConfig::at_least_once());
    let log = Log::default();
    let broken = Arc::new(AtomicBool::new(true));
    let (l, b) = (log.clone(), broken.clone());
    let sub = bus
        .subscribe(&topic, "sub", sub_config(&t, RetryPolicy::NO_RETRIES), move |m: Message<Event>| {
            l.record(&m);
            let fail = b.load(SeqCst);
            async move {
                if fail {
                    Err(HandlerError::retry("warehouse down"))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    let id = topic.publish(&bus, &Event::new(1)).await.unwrap();
    assert_eq!(wait_dead_letters(&sub, 1, t.patience).await.len(), 1);
    broken.store(false, SeqCst);
    assert_eq!(sub.redrive(std::slice::from_ref(&id)).await.unwrap(), 1, "one message redriven");
    let got = log.wait_for(2, t.patience).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].meta.id, id);
    assert_eq!(got[1].meta.attempt, 1, "redrive resets the attempt counter");
    let end = Instant::now() + t.patience;
    while !sub.dead_letters(10).await.unwrap().is_empty() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sub.dead_letters(10).await.unwrap().is_empty(), "the DLQ is empty after redrive");
    bus.shutdown(t.patience).await;
}

pub async fn foreign_bad_input_goes_to_dlq<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("foreign", TopicConfig::at_least_once());
    let log = Log::default();
    let sub = bus.subscribe(&topic, "sub", sub_config(&t, 5), logging(&log)).await.unwrap();
    // Payloads another producer might send, published through the backend's own driver (no tidings validation).
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"hello, world".to_vec()),
        ("empty", Vec::new()),
        ("wrong shape", br#"{"unexpected": true}"#.to_vec()),
        ("wrong type", br#"{"n": "seven", "text": 7}"#.to_vec()),
        ("JSON null", b"null".to_vec()),
        ("array", b"[1, 2, 3]".to_vec()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01]),
    ];
    let spec = bus.subscription_spec(&topic, "sub", sub_config(&t, 5)).topic;
    let driver = bus.backend().topic(&spec).await.unwrap();
    let mut accepted = 0;
    for (i, (what, payload)) in bad.iter().enumerate() {
        let mut attributes = tidings_core::Attributes::new();
        attributes.insert("producer".into(), "foreign".into());
        attributes.insert(format!("unexpected-{i}"), what.to_string());
        let m = tidings_core::backend::OutgoingMessage::new(
            tidings_core::MessageId::generate(),
            bytes::Bytes::from(payload.clone()),
            attributes,
            None,
            SystemTime::now(),
        );
        // A backend may refuse a payload outright (SNS bodies must be text): then nothing was accepted to lose.
        if driver.publish(&[m]).await.is_ok_and(|r| r.failures().is_empty()) {
            accepted += 1;
        }
    }
    assert!(accepted >= 5, "the backend accepted only {accepted} of the foreign messages");
    topic.publish(&bus, &Event::new(1)).await.unwrap();
    let dead = wait_dead_letters(&sub, accepted, t.patience).await;
    log.wait_for(1, t.patience).await;
    tokio::time::sleep(t.ack_deadline).await;
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(dead.len(), accepted, "every foreign message is dead-lettered once: {reasons:?}");
    for d in &dead {
        assert_eq!(d.attempts, 1, "poison is not retried: {d:?}");
        assert!(d.reason.contains("poison"), "{}", d.reason);
        assert_eq!(d.attributes.get("producer").map(String::as_str), Some("foreign"), "attributes kept");
    }
    let ns: Vec<u64> = log.all().iter().map(|d| d.event.n).collect();
    assert_eq!(ns, vec![1], "the handler saw only the good message, once");
    bus.shutdown(t.patience).await;
}
