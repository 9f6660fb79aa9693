//! The ledger test: a bounded stream of messages to a topic with two subscriptions whose handlers fail at random
//! (10 %), panic now and then (1 %), sometimes run past the ack deadline, and always fail for a few "doomed"
//! messages. At the end every published id is accounted for in each subscription, exactly once as either acked or
//! dead-lettered; redeliveries of acked messages (which at-least-once allows) are counted and reported.
#![allow(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::support::{topic, Event};
use super::Harness;
use tidings_core::{HandlerError, Message, PublishOptions, RetryPolicy, SubscriptionConfig, TopicConfig};

/// What one subscription saw.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Ids whose handler returned `Ok`, with how many times.
    pub acked: HashMap<String, u32>,
    pub failures: AtomicU64,
    pub panics: AtomicU64,
    pub slow: AtomicU64,
    pub deliveries: AtomicU64,
}

/// Injected panics are expected; keep them out of the test output (other panics still print).
pub(crate) fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or("");
            if !msg.starts_with("injected panic") {
                previous(info);
            }
        }));
    });
}

/// A cheap deterministic hash of (message, attempt, subscription) deciding the fault to inject.
pub(crate) fn roll(n: u64, attempt: u32, salt: u64) -> u64 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(attempt) << 32) ^ salt;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x % 1000
}

/// Runs the ledger with `n` messages published from 8 concurrent tasks; panics on a lost or doubly settled message.
pub async fn ledger<H: Harness>(h: &H, n: u64, exactly_once: bool) {
    let _exclusive = super::EXCLUSIVE.lock().await;
    quiet_injected_panics();
    super::recorded::install();
    let (bus, t) = (h.bus().await, h.timing());
    let config = if exactly_once { TopicConfig::exactly_once() } else { TopicConfig::at_least_once() };
    let tp = topic::<Event>("ledger", config);
    let retry = RetryPolicy::new(t.min_backoff, t.max_backoff).with_max_retries(3);
    let cfg = SubscriptionConfig::DEFAULT.with_ack_deadline(t.ack_deadline).with_max_concurrency(50).with_retry(retry);
    let mut subs = Vec::new();
    let mut ledgers = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let ledger: Arc<Mutex<Ledger>> = Arc::default();
        let (l, slow) = (ledger.clone(), t.ack_deadline.mul_f64(1.5));
        let salt = i as u64 * 7919;
        let sub = bus
            .subscribe(&tp, name, cfg, move |m: Message<Event>| {
                let l = l.clone();
                let r = roll(m.n, m.attempt(), salt);
                async move {
                    l.lock().unwrap().deliveries.fetch_add(1, Relaxed);
                    if m.n % 97 == 0 {
                        l.lock().unwrap().failures.fetch_add(1, Relaxed);
                        return Err(HandlerError::retry(format!("doomed message {}", m.n)));
                    }
                    // Faults only on the first two attempts, so only the doomed messages can exhaust their retries.
                    if m.attempt() > 2 {
                        *l.lock().unwrap().acked.entry(m.id().to_string()).or_default() += 1;
                        return Ok(());
                    }
                    if r < 10 {
                        l.lock().unwrap().panics.fetch_add(1, Relaxed);
                        panic!("injected panic on {}", m.n);
                    }
                    if r < 110 {
                        l.lock().unwrap().failures.fetch_add(1, Relaxed);
                        return Err(HandlerError::retry("injected failure"));
                    }
                    if r < 115 {
                        l.lock().unwrap().slow.fetch_add(1, Relaxed);
                        tokio::time::sleep(slow).await;
                    }
                    *l.lock().unwrap().acked.entry(m.id().to_string()).or_default() += 1;
                    Ok(())
                }
            })
            .await
            .unwrap();
        subs.push(sub);
        ledgers.push(ledger);
    }
    let mut published = HashSet::new();
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let (bus, tp) = (bus.clone(), tidings_core::Topic::<Event>::new(tp.name(), tp.config()));
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (w..n).step_by(8) {
                let events: Vec<Event> = vec![Event::new(i)];
                let got = tp.publish_batch(&bus, events.iter().map(|e| (e, PublishOptions::new()))).await.unwrap();
                ids.extend(got.into_iter().map(|id| id.to_string()));
            }
            ids
        }));
    }
    for task in tasks {
        published.extend(task.await.unwrap());
    }
    assert_eq!(published.len() as u64, n);
    let doomed = (0..n).filter(|i| i % 97 == 0).count();
    // Wait until each subscription has settled everything: acked + dead-lettered = published.
    let deadline = Instant::now() + t.patience * 4;
    let mut report = Vec::new();
    let mut dead_counts = Vec::new();
    for (name, (sub, ledger)) in ["a", "b"].iter().zip(subs.iter().zip(&ledgers)) {
        let mut dead;
        loop {
            dead = sub.dead_letters(doomed + 100).await.unwrap();
            let acked = ledger.lock().unwrap().acked.len();
            if acked + dead.len() >= published.len() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let l = ledger.lock().unwrap();
        let dead_ids: HashSet<String> = dead.iter().map(|d| d.id.to_string()).collect();
        let acked_ids: HashSet<String> = l.acked.keys().cloned().collect();
        let lost: Vec<&String> =
            published.iter().filter(|id| !acked_ids.contains(*id) && !dead_ids.contains(*id)).collect();
        let both: Vec<&String> = acked_ids.intersection(&dead_ids).collect();
        let duplicates: u32 = l.acked.values().map(|c| c - 1).sum();
        let line = format!(
            "LEDGER backend={} subscription={name} exactly_once={exactly_once} published={} acked={} dead_lettered={} \
             lost={} acked_and_dead={} duplicate_acks={duplicates} deliveries={} failures={} panics={} slow={}",
            bus.backend_name(),
            published.len(),
            acked_ids.len(),
            dead_ids.len(),
            lost.len(),
            both.len(),
            l.deliveries.load(Relaxed),
            l.failures.load(Relaxed),
            l.panics.load(Relaxed),
            l.slow.load(Relaxed),
        );
        let _ = writeln!(std::io::stderr(), "{line}");
        report.push(line);
        dead_counts.push(dead_ids.len());
        assert!(
            lost.is_empty(),
            "{name}: {} messages neither acked nor dead-lettered, e.g. {:?}",
            lost.len(),
            lost.first()
        );
        assert!(both.is_empty(), "{name}: messages both acked and dead-lettered: {both:?}");
        assert_eq!(dead_ids.len(), doomed, "{name}: exactly the doomed messages are dead-lettered");
        for d in &dead {
            assert!(d.reason.starts_with("doomed message"), "{name}: dead letter reason {:?}", d.reason);
        }
        if exactly_once {
            assert_eq!(duplicates, 0, "{name}: exactly-once delivered an acked message again");
        }
    }
    bus.shutdown(t.patience).await;
    let ledgers: Vec<_> = ledgers.iter().map(|l| std::mem::take(&mut *l.lock().unwrap())).collect();
    metrics_add_up(&bus, tp.name(), n, &ledgers, &dead_counts);
}

/// Metrics after the ledger add up: every publish counted once; per subscription each delivery ended as exactly one
/// of acked, retried or dead-lettered, in agreement with what the handlers saw; the backend's API-call counter
/// equals the calls it counted itself.
fn metrics_add_up(bus: &tidings_core::Bus, topic: &str, published: u64, ledgers: &[Ledger], dead: &[usize]) {
    use super::recorded::{snapshot, sum, sum_by};
    use tidings_core::metrics::*;
    let backend = bus.backend_name();
    let series = snapshot(&[("backend", backend), ("topic", topic)]);
    let count = |name: &str, filter: &[(&str, &str)]| sum(&series, name, filter) as u64;
    assert_eq!(count(SENT_MESSAGES, &[("outcome", "ok")]), published, "{SENT_MESSAGES} ok");
    assert_eq!(count(SENT_MESSAGES, &[("outcome", "error")]), 0, "{SENT_MESSAGES} error");
    for ((name, l), &dead) in ["a", "b"].iter().zip(ledgers).zip(dead) {
        let f = [("subscription", *name)];
        let consumed = count(CONSUMED_MESSAGES, &f);
        let acked = count(ACKED, &f);
        let retried = count(RETRIED, &f);
        let dead_lettered = sum_by(&series, DEAD_LETTERED, "reason", &f);
        let dead_total = dead_lettered.values().sum::<f64>() as u64;
        let _ = writeln!(
            std::io::stderr(),
            "LEDGER METRICS backend={backend} subscription={name} consumed={consumed} acked={acked} retried={retried} \
             dead_lettered={dead_lettered:?}"
        );
        let handler_oks: u64 = l.acked.values().map(|&c| u64::from(c)).sum();
        let duplicates = handler_oks - l.acked.len() as u64;
        let failed = l.failures.load(Relaxed) + l.panics.load(Relaxed);
        assert_eq!(consumed, l.deliveries.load(Relaxed), "{name}: {CONSUMED_MESSAGES} = handler calls");
        assert_eq!(acked, handler_oks, "{name}: {ACKED} = handler calls that returned Ok");
        assert_eq!(acked - duplicates + dead_total, published, "{name}: published = acked (once each) + dead-lettered");
        assert_eq!(dead_total, dead as u64, "{name}: {DEAD_LETTERED} = dead letters in the queue");
        assert_eq!(
            dead_lettered.get("handler_error").copied().unwrap_or(0.0) as u64,
            dead_total,
            "{name}: the doomed messages are dead-lettered as handler errors"
        );
        assert_eq!(retried + dead_total, failed, "{name}: retries = failed attempts (the last ones dead-lettered)");
        assert_eq!(acked + retried + dead_total, consumed, "{name}: each delivery settled once");
        assert_eq!(count(IN_FLIGHT, &f), 0, "{name}: no handler in flight after shutdown");
        assert_eq!(count(PROCESS_DURATION, &f), consumed, "{name}: a process duration per delivery");
        assert_eq!(count(DELIVERY_LATENCY, &f), consumed, "{name}: a delivery latency per delivery");
    }
    if let Some(calls) = bus.api_calls() {
        let by_op = sum_by(&series, API_CALLS, "operation", &[]);
        let by_op: std::collections::BTreeMap<&str, u64> = by_op.iter().map(|(k, v)| (k.as_str(), *v as u64)).collect();
        let _ = writeln!(std::io::stderr(), "LEDGER API CALLS backend={backend} {by_op:?}");
        assert_eq!(by_op, calls.snapshot(), "{API_CALLS} of the ledger's topic = the backend's own count");
    }
}
