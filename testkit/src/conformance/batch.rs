//! Batch handlers (`Bus::subscribe_batch`): batches fill to `max_messages` or leave `max_wait` after their first
//! message; each message is settled on its own (outcome, backoff, attempts, dead letters); order per key across
//! batches; leases of a running batch extended; shutdown tells the batch and leaves it unacked; a panic or a wrong
//! number of outcomes fails the whole batch; bad settings refused; delayed messages never early.
#![allow(missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::support::{self, sub_config, topic, wait_dead_letters, wait_until, Event};
use super::Harness;
use tidings_core::backend::wire::{format_deliver_at, parse_deliver_at, DELIVER_AT_ATTRIBUTE};
use tidings_core::{
    BatchOutcome, BatchResult, Bus, ErrorKind, HandlerError, HandlerResult, Message, MessageId, Metadata,
    PublishOptions, RetryPolicy, Settings, Topic, TopicConfig,
};

/// One batch as the handler got it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    wall: SystemTime,
    items: Vec<(u64, Metadata)>,
}

/// Thread-safe log of batches.
#[derive(Clone, Default)]
struct Batches(Arc<Mutex<Vec<Seen>>>);

impl Batches {
    fn record(&self, batch: &[Message<Event>]) {
        let items = batch.iter().map(|m| (m.n, m.meta.clone())).collect();
        let seen = Seen { at: Instant::now(), wall: SystemTime::now(), items };
        self.0.lock().unwrap().push(seen);
    }
    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    /// Messages handed over, over all batches.
    fn count(&self) -> usize {
        self.0.lock().unwrap().iter().map(|b| b.items.len()).sum()
    }
    fn sizes(&self) -> Vec<usize> {
        self.all().iter().map(|b| b.items.len()).collect()
    }
    /// The attempts each message was handed over with, by its number.
    fn attempts(&self) -> BTreeMap<u64, Vec<u32>> {
        let mut out: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for b in self.all() {
            for (n, meta) in b.items {
                out.entry(n).or_default().push(meta.attempt);
            }
        }
        out
    }
}

fn events(ns: impl IntoIterator<Item = u64>) -> Vec<Event> {
    ns.into_iter().map(Event::new).collect()
}

async fn publish_all(bus: &Bus, topic: &Topic<Event>, events: &[Event]) -> Vec<MessageId> {
    topic.publish_batch(bus, events.iter().map(|e| (e, PublishOptions::new()))).await.unwrap()
}

/// A batch handler that logs each batch and acks it, after `work`.
fn acking(
    seen: &Batches,
    work: Duration,
) -> impl Fn(Vec<Message<Event>>) -> std::pin::Pin<Box<dyn std::future::Future<Output = BatchResult> + Send>>
       + Send
       + Sync
       + Clone
       + 'static {
    let seen = seen.clone();
    move |batch| {
        seen.record(&batch);
        Box::pin(async move {
            tokio::time::sleep(work).await;
            Ok(BatchOutcome::AckAll)
        })
    }
}

/// 20 messages published together, `max_messages` 10 and a `max_wait` beyond the test: two full batches, one at a
/// time (`max_concurrency` 1 counts batches, not messages). 3 messages, `max_messages` 100: one batch, handed over
/// `max_wait` after they were published, never sooner (a batch leaves `max_wait` after its first message arrived, and
/// a message cannot arrive before it was published).
pub async fn batches_fill_to_max_messages_or_leave_after_max_wait<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("batch-size", TopicConfig::at_least_once());
    let seen = Batches::default();
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, r, m) = (seen.clone(), running.clone(), most.clone());
    let cfg = sub_config(&t, 5).with_max_concurrency(1).with_max_messages(10).with_max_wait(t.patience * 4);
    bus.subscribe_batch(&topic, "sub", cfg, move |batch: Vec<Message<Event>>| {
        s.record(&batch);
        let (r, m) = (r.clone(), m.clone());
        async move {
            m.fetch_max(r.fetch_add(1, SeqCst) + 1, SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            r.fetch_sub(1, SeqCst);
            Ok(BatchOutcome::AckAll)
        }
    })
    .await
    .unwrap();
    publish_all(&bus, &topic, &events(0..20)).await;
    assert!(wait_until(t.patience, || seen.count() >= 20).await, "20 messages handed over: {:?}", seen.sizes());
    assert_eq!(seen.sizes(), vec![10, 10], "two full batches of max_messages 10");
    let ns: BTreeSet<u64> = seen.attempts().into_keys().collect();
    assert_eq!(ns, (0..20).collect(), "each message in one of them");
    assert_eq!(most.load(SeqCst), 1, "max_concurrency 1: one batch at a time");

    let topic = support::topic::<Event>("batch-wait", TopicConfig::at_least_once());
    let seen = Batches::default();
    let wait = t.ack_deadline;
    let cfg = sub_config(&t, 5).with_max_messages(100).with_max_wait(wait);
    bus.subscribe_batch(&topic, "sub", cfg, acking(&seen, Duration::ZERO)).await.unwrap();
    let published = Instant::now();
    publish_all(&bus, &topic, &events(0..3)).await;
    assert!(wait_until(t.patience + wait, || seen.count() >= 3).await, "3 messages handed over: {:?}", seen.sizes());
    for b in seen.all() {
        let after = b.at - published;
        assert!(
            after >= wait,
            "a batch short of max_messages was handed over {after:?} after publish, before max_wait"
        );
        assert!(after < wait + t.patience, "a batch waited {after:?}, far past max_wait {wait:?}");
    }
    assert_eq!(seen.sizes(), vec![3], "the 3 messages published together waited in one batch");
    bus.shutdown(t.patience).await;
}

/// One batch of 8 with every kind of outcome: acked (attempt 1 only), retried once then acked (attempts 1, 2, the
/// second after its backoff), failing every time (attempts 1, 2, 3, then the dead-letter queue with its 3 attempts
/// and reason), unrecoverable (the dead-letter queue at once). Each message is counted and settled on its own.
pub async fn batch_outcomes_and_attempts_are_per_message<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("batch-outcomes", TopicConfig::at_least_once());
    let seen = Batches::default();
    let s = seen.clone();
    let cfg = sub_config(&t, 2).with_max_messages(8).with_max_wait(t.ack_deadline);
    let sub = bus
        .subscribe_batch(&topic, "sub", cfg, move |batch: Vec<Message<Event>>| {
            s.record(&batch);
            let results: Vec<HandlerResult> = batch
                .iter()
                .map(|m| match m.n % 4 {
                    0 => Ok(()),
                    1 if m.attempt() == 1 => Err(HandlerError::retry(format!("first try of {} failed", m.n))),
                    1 => Ok(()),
                    2 => Err(HandlerError::retry(format!("{} keeps failing", m.n))),
                    _ => Err(HandlerError::unrecoverable(format!("{} refused", m.n))),
                })
                .collect();
            std::future::ready(Ok(BatchOutcome::Each(results)))
        })
        .await
        .unwrap();
    let ids = publish_all(&bus, &topic, &events(0..8)).await;
    let dead = wait_dead_letters(&sub, 4, t.patience * 2).await;
    let want: BTreeMap<u64, Vec<u32>> = (0..8)
        .map(|n| {
            let attempts = match n % 4 {
                0 | 3 => vec![1],
                1 => vec![1, 2],
                _ => vec![1, 2, 3],
            };
            (n, attempts)
        })
        .collect();
    assert!(wait_until(t.patience, || seen.attempts() == want).await, "attempts by message: {:?}", seen.attempts());
    // A late copy of anything (none expected) would show up within this.
    tokio::time::sleep(t.max_backoff + t.ack_deadline).await;
    assert_eq!(seen.attempts(), want, "each message's attempts are its own");
    assert_eq!(seen.sizes()[0], 8, "the first batch held all 8, every kind of outcome: {:?}", seen.sizes());
    let first_at = seen.all()[0].at;
    for b in seen.all().iter().skip(1) {
        let gap = b.at - first_at;
        assert!(gap >= t.min_backoff.mul_f64(0.9), "a retry came {gap:?} after the first batch, before its backoff");
    }
    let mut dead: Vec<(MessageId, u32, String)> = dead.into_iter().map(|d| (d.id, d.attempts, d.reason)).collect();
    dead.sort_by_key(|d| d.0.to_string());
    assert_eq!(dead.len(), 4, "the 2 failing and the 2 unrecoverable messages are dead letters: {dead:?}");
    for (id, attempts, reason) in &dead {
        let n = ids.iter().position(|i| i == id).expect("a published id") as u64;
        match n % 4 {
            2 => {
                assert_eq!(*attempts, 3, "{n}: 3 attempts (max_retries 2)");
                assert!(reason.contains(&format!("{n} keeps failing")), "{n}: {reason}");
            }
            3 => {
                assert_eq!(*attempts, 1, "{n}: unrecoverable, not retried");
                assert!(reason.contains(&format!("{n} refused")), "{n}: {reason}");
            }
            _ => panic!("message {n} is not one to dead-letter: {reason}"),
        }
    }
    if let Some(b) = sub.backlog().await.unwrap() {
        assert_eq!(b, 0, "every message left the subscription");
    }
    bus.shutdown(t.patience).await;
}

/// An ordered topic with batches of up to 5 from 3 keys, 4 batches at once: a key's messages in a batch are in
/// publish order, a key is never in two running batches, and every third message of a key fails once (the handler
/// fails its key's later messages in that batch with it, as the runtime would retry them anyway): each key's messages
/// are acked in publish order, retries included.
pub async fn batch_order_per_key_holds_across_batches<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    support::require(&bus, bus.capabilities().ordering, "batch_order_per_key_holds_across_batches", "ordering");
    let topic = topic::<Event>("batch-ordered", TopicConfig::at_least_once().ordered());
    let acked: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let running: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (overlap, disorder) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (a, r, o, d) = (acked.clone(), running.clone(), overlap.clone(), disorder.clone());
    let cfg = sub_config(&t, 5)
        .with_max_concurrency(4)
        .with_max_messages(5)
        .with_max_wait((t.min_backoff / 4).max(Duration::from_millis(50)));
    bus.subscribe_batch(&topic, "sub", cfg, move |batch: Vec<Message<Event>>| {
        let (a, r, o, d) = (a.clone(), r.clone(), o.clone(), d.clone());
        async move {
            let mut last: HashMap<String, u64> = HashMap::new();
            for m in &batch {
                let key = m.ordering_key().unwrap().to_string();
                if last.insert(key, m.n).is_some_and(|before| before > m.n) {
                    d.store(true, SeqCst);
                }
            }
            let keys: BTreeSet<String> = last.into_keys().collect();
            {
                let mut running = r.lock().unwrap();
                for k in &keys {
                    let c = running.entry(k.clone()).or_default();
                    *c += 1;
                    if *c > 1 {
                        o.store(true, SeqCst);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut failed: BTreeSet<String> = BTreeSet::new();
            let mut results = Vec::with_capacity(batch.len());
            for m in &batch {
                let key = m.ordering_key().unwrap().to_string();
                if failed.contains(&key) || ((m.n / 10) % 3 == 1 && m.attempt() == 1) {
                    failed.insert(key);
                    results.push(Err(HandlerError::retry("transient, or behind a failed message of its key")));
                } else {
                    a.lock().unwrap().entry(key).or_default().push(m.n);
                    results.push(Ok(()));
                }
            }
            let mut running = r.lock().unwrap();
            for k in &keys {
                running.entry(k.clone()).and_modify(|c| *c -= 1);
            }
            Ok(BatchOutcome::Each(results))
        }
    })
    .await
    .unwrap();
    let per_key = 6u64;
    for i in 0..per_key {
        for key in ["alice", "bob", "carol"] {
            let n = i * 10 + (key.len() as u64 % 10);
            topic.publish_with(&bus, &Event::new(n), PublishOptions::new().ordering_key(key)).await.unwrap();
        }
    }
    let total = 3 * per_key as usize;
    let count = || acked.lock().unwrap().values().map(Vec::len).sum::<usize>();
    assert!(wait_until(t.patience * 2, || count() >= total).await, "all acked: {:?}", acked.lock().unwrap());
    for (key, ns) in acked.lock().unwrap().iter() {
        let mut sorted = ns.clone();
        sorted.sort();
        assert_eq!(ns, &sorted, "key {key}: acked in publish order, retries included");
        assert_eq!(ns.len(), per_key as usize, "key {key}: each message acked once");
    }
    assert!(!disorder.load(SeqCst), "a batch held a key's messages out of order");
    assert!(!overlap.load(SeqCst), "a key was in two running batches at once");
    bus.shutdown(t.patience).await;
}

/// A batch of 3 whose handler runs 3 times the ack deadline: every lease is extended, nothing is delivered twice.
pub async fn batch_leases_are_extended_while_it_runs<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("batch-lease", TopicConfig::at_least_once());
    let seen = Batches::default();
    let slow = t.ack_deadline * 3;
    let cfg = sub_config(&t, 5).with_max_messages(3).with_max_wait(t.ack_deadline);
    bus.subscribe_batch(&topic, "sub", cfg, acking(&seen, slow)).await.unwrap();
    publish_all(&bus, &topic, &events(0..3)).await;
    assert!(wait_until(t.patience, || seen.count() >= 3).await, "3 messages handed over: {:?}", seen.sizes());
    // The batch ends after `slow`; a lapsed lease would bring a copy within another deadline and backoff.
    tokio::time::sleep(slow + t.ack_deadline + t.max_backoff).await;
    let attempts = seen.attempts();
    assert_eq!(attempts, (0..3).map(|n| (n, vec![1])).collect(), "each message of the long batch delivered once");
    assert_eq!(seen.sizes(), vec![3]);
    bus.shutdown(t.patience).await;
}

/// A batch running at shutdown is told ([`Message::shutdown_requested`] completes for its messages); one that does
/// not finish within the timeout is dropped and its messages stay unacked: the subscription, started again, gets each
/// of them back as a later attempt.
pub async fn batch_is_told_of_shutdown_and_left_unacked<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("batch-shutdown", TopicConfig::at_least_once());
    let (seen, told) = (Batches::default(), Arc::new(AtomicUsize::new(0)));
    let handler = {
        let (seen, told) = (seen.clone(), told.clone());
        move |batch: Vec<Message<Event>>| {
            seen.record(&batch);
            let told = told.clone();
            async move {
                if batch[0].attempt() == 1 {
                    for m in &batch {
                        m.shutdown_requested().await;
                        told.fetch_add(usize::from(m.is_shutting_down()), SeqCst);
                    }
                    std::future::pending::<()>().await;
                }
                Ok(BatchOutcome::AckAll)
            }
        }
    };
    let cfg = sub_config(&t, 5).with_max_messages(3).with_max_wait(t.ack_deadline);
    let sub = bus.subscribe_batch(&topic, "sub", cfg, handler.clone()).await.unwrap();
    let ids = publish_all(&bus, &topic, &events(0..3)).await;
    assert!(wait_until(t.patience, || seen.count() >= 3).await, "the batch started: {:?}", seen.sizes());
    let begun = Instant::now();
    sub.shutdown(Duration::from_millis(300)).await;
    let took = begun.elapsed();
    assert!(took <= Duration::from_millis(300) + Bus::SHUTDOWN_MARGIN, "shutdown took {took:?}");
    assert_eq!(told.load(SeqCst), 3, "every message of the running batch saw the shutdown signal");
    bus.subscribe_batch(&topic, "sub", cfg, handler).await.unwrap();
    let again = |seen: &Batches| -> BTreeSet<MessageId> {
        let all = seen.all().into_iter().flat_map(|b| b.items);
        all.filter(|(_, m)| m.attempt >= 2).map(|(_, m)| m.id).collect()
    };
    let back = wait_until(t.patience + t.ack_deadline, || again(&seen).len() == 3).await;
    assert!(back, "the unfinished batch's messages came back as later attempts: {:?}", seen.attempts());
    assert_eq!(again(&seen), ids.into_iter().collect(), "those messages, and only those");
    bus.shutdown(t.patience).await;
}

/// A batch handler that panics fails every message of its batch (here without retries: all 3 are dead letters,
/// each with the panic as its reason), and the subscription carries on.
pub async fn batch_panic_fails_every_message<H: Harness>(h: &H) {
    super::ledger::quiet_injected_panics();
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("batch-panic", TopicConfig::at_least_once());
    let seen = Batches::default();
    let s = seen.clone();
    let cfg = sub_config(&t, RetryPolicy::NO_RETRIES).with_max_messages(3).with_max_wait(t.ack_deadline);
    let sub = bus
        .subscribe_batch(&topic, "sub", cfg, move |batch: Vec<Message<Event>>| {
            s.record(&batch);
            let panics = batch.iter().find(|m| m.n == 2).map(|m| m.n);
            async move {
                if let Some(n) = panics {
                    // A String payload, which the quiet hook recognizes: printing a backtrace can outlast the ack
                    // deadline on a loaded machine.
                    panic!("injected panic: a batch with message {n}");
                }
                Ok(BatchOutcome::AckAll)
            }
        })
        .await
        .unwrap();
    let ids = publish_all(&bus, &topic, &events(1..4)).await;
    let dead = wait_dead_letters(&sub, 3, t.patience).await;
    assert_eq!(seen.sizes()[0], 3, "the 3 messages were one batch");
    let dead_ids: BTreeSet<MessageId> = dead.iter().map(|d| d.id.clone()).collect();
    assert_eq!(dead_ids, ids.into_iter().collect(), "every message of the batch failed: {dead:?}");
    for d in &dead {
        assert_eq!(d.attempts, 1);
        assert!(d.reason.contains("panicked") && d.reason.contains("a batch with message 2"), "{}", d.reason);
    }
    topic.publish(&bus, &Event::new(4)).await.unwrap();
    assert!(wait_until(t.patience, || seen.attempts().contains_key(&4)).await, "the subscription carries on");
    bus.shutdown(t.patience).await;
}

/// A handler returning one outcome too few (all acks), then one too many, fails the whole batch each time: every
/// message is retried, none acked, until the third attempt returns the right count.
pub async fn batch_with_a_wrong_outcome_count_is_retried_whole<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("batch-count", TopicConfig::at_least_once());
    let seen = Batches::default();
    let s = seen.clone();
    let cfg = sub_config(&t, 5).with_max_messages(3).with_max_wait(t.ack_deadline);
    bus.subscribe_batch(&topic, "sub", cfg, move |batch: Vec<Message<Event>>| {
        s.record(&batch);
        let attempt = batch.iter().map(Message::attempt).max().unwrap_or(1);
        let n = match attempt {
            1 => batch.len() - 1,
            2 => batch.len() + 1,
            _ => batch.len(),
        };
        std::future::ready(Ok((0..n).map(|_| Ok(())).collect::<BatchOutcome>()))
    })
    .await
    .unwrap();
    publish_all(&bus, &topic, &events(0..3)).await;
    let want: BTreeMap<u64, Vec<u32>> = (0..3).map(|n| (n, vec![1, 2, 3])).collect();
    assert!(wait_until(t.patience * 2, || seen.attempts() == want).await, "attempts: {:?}", seen.attempts());
    tokio::time::sleep(t.max_backoff + t.ack_deadline).await;
    assert_eq!(seen.attempts(), want, "retried whole twice, acked at the third attempt, once");
    bus.shutdown(t.patience).await;
}

/// `max_messages` 0 or above the backend's `max_batch_messages`, and a zero `max_wait`, are refused at subscribe,
/// naming the value and the bound, from code or from a configuration override; `max_messages` at the bound is taken.
pub async fn invalid_batch_configs_are_refused<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("batch-configs", TopicConfig::at_least_once());
    let bound = bus.capabilities().max_batch_messages;
    let base = sub_config(&t, 5);
    let over = format!("max_messages {} is above the {} backend's limit of {bound}", bound + 1, bus.backend_name());
    let cases = [
        (base.with_max_messages(0), "max_messages 0 is invalid: a batch holds at least 1 message".to_string()),
        (base.with_max_messages(bound + 1), over.clone()),
        (base.with_max_wait(Duration::ZERO), "max_wait 0ns is invalid: it must be a positive duration".to_string()),
    ];
    for (cfg, needle) in cases {
        let e = bus.subscribe_batch(&topic, "sub", cfg, acking(&Batches::default(), Duration::ZERO)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let m = e.to_string();
        assert!(m.contains(&needle) && m.contains("\"sub\"") && m.contains(topic.name()), "{m}");
    }
    let toml = format!("[subscriptions.{}.sub]\nmax_messages = {}\n", topic.name(), bound + 1);
    let configured = Bus::builder(bus.backend().clone()).settings(Settings::from_toml(&toml).unwrap()).build();
    let e = configured.subscribe_batch(&topic, "sub", base, acking(&Batches::default(), Duration::ZERO)).await;
    let e = e.unwrap_err();
    assert!(e.kind() == ErrorKind::InvalidInput && e.to_string().contains(&over), "{e}");
    let at_bound = base.with_max_messages(bound);
    bus.subscribe_batch(&topic, "sub", at_bound, acking(&Batches::default(), Duration::ZERO)).await.unwrap();
    bus.shutdown(t.patience).await;
}

/// Delayed messages (published with a due time, and one from a foreign producer carrying the due-time attribute)
/// never enter a batch before they are due; messages published at once go in batches right away. Each is handed over
/// once, as attempt 1.
pub async fn batch_never_holds_a_message_before_it_is_due<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("batch-delayed", TopicConfig::at_least_once());
    let seen = Batches::default();
    let cfg = sub_config(&t, 5).with_max_messages(10).with_max_wait(Duration::from_millis(200));
    bus.subscribe_batch(&topic, "sub", cfg, acking(&seen, Duration::ZERO)).await.unwrap();
    let start = SystemTime::now();
    // Whole milliseconds: the precision of the due-time attribute, which a foreign producer writes and held backends
    // carry.
    let due = parse_deliver_at(&format_deliver_at(start + Duration::from_secs(2))).unwrap();
    let batch = [
        (Event::new(1), PublishOptions::new().deliver_at(due)),
        (Event::new(2), PublishOptions::new().deliver_at(due)),
        (Event::new(3), PublishOptions::new()),
        (Event::new(4), PublishOptions::new()),
    ];
    topic.publish_batch(&bus, batch.iter().map(|(e, o)| (e, o.clone()))).await.unwrap();
    let spec = bus.subscription_spec(&topic, "sub", cfg).topic;
    let mut attributes = tidings_core::Attributes::new();
    attributes.insert(DELIVER_AT_ATTRIBUTE.into(), format_deliver_at(due));
    let foreign = tidings_core::backend::OutgoingMessage::new(
        MessageId::generate(),
        bytes::Bytes::from(serde_json::to_vec(&Event::new(5)).unwrap()),
        attributes,
        None,
        SystemTime::now(),
    );
    let published = bus.backend().topic(&spec).await.unwrap().publish(&[foreign]).await.unwrap();
    assert!(published.failures().is_empty(), "{:?}", published.failures());
    assert!(wait_until(Duration::from_secs(2) + t.patience, || seen.count() >= 5).await, "{:?}", seen.attempts());
    // A second delivery (none expected) would show up within another second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seen.attempts(), (1..6).map(|n| (n, vec![1])).collect(), "each handed over once, as attempt 1");
    for b in seen.all() {
        for (n, meta) in &b.items {
            assert!(!meta.attributes.contains_key(DELIVER_AT_ATTRIBUTE), "the due-time attribute is not the handler's");
            if *n == 1 || *n == 2 || *n == 5 {
                let early = due.duration_since(b.wall).ok();
                assert!(early.is_none_or(|e| e.is_zero()), "message {n} was handed over {early:?} before its due time");
            } else {
                let after = b.wall.duration_since(start).unwrap_or_default();
                assert!(after < Duration::from_secs(2), "message {n}, not delayed, waited {after:?}");
            }
        }
    }
    bus.shutdown(t.patience).await;
}

/// The spans of a batch: one `process` span per batch handler call (`messaging.batch.message_count`, current while
/// the handler runs, `error.type` when the whole call failed) and, as its children, one `process` span per message
/// attempt as a single handler's (message id, attempt, linked to its publish's `send` span), holding its settle event.
pub async fn batch_spans_cover_the_call_and_each_message<H: Harness>(h: &H) {
    use tracing::Instrument;
    let _exclusive = super::EXCLUSIVE.lock().await;
    let capture = super::capture::install();
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("batch-traced", TopicConfig::at_least_once());
    let _watching = capture.watch(topic.name());
    let handler = |batch: Vec<Message<Event>>| async move {
        tracing::info!(test.batch = batch.len(), "batch handler running");
        let results = batch.iter().map(|m| match m.n {
            1 => Err(HandlerError::unrecoverable("refused")),
            _ => Ok(()),
        });
        Ok(results.collect::<BatchOutcome>())
    };
    let cfg = sub_config(&t, 2).with_max_messages(2).with_max_wait(t.patience);
    let sub = bus.subscribe_batch(&topic, "audit", cfg, handler).await.unwrap();
    let request = tracing::info_span!("request", test.topic = topic.name());
    let ids = publish_all(&bus, &topic, &events(0..2)).instrument(request).await;
    assert_eq!(wait_dead_letters(&sub, 1, t.patience).await.len(), 1);
    let spans = capture.spans_of(topic.name());
    let named = |name: &str| spans.iter().filter(|s| s.name == name).cloned().collect::<Vec<_>>();
    let sends = named("send");
    assert_eq!(sends.len(), 1, "one send span for the publish_batch: {sends:#?}");
    let process = named("process");
    let calls: Vec<_> = process.iter().filter(|s| s.field("messaging.batch.message_count").is_some()).collect();
    assert_eq!(calls.len(), 1, "one span for the batch handler call: {process:#?}");
    let call = calls[0];
    assert_eq!(call.field("messaging.batch.message_count"), Some("2"));
    assert_eq!(call.field("otel.name"), Some("process audit"));
    assert_eq!(call.field("otel.kind"), Some("consumer"));
    assert_eq!(call.field("messaging.destination.subscription.name"), Some("audit"));
    assert_eq!(
        call.events_with("test.batch", "2").len(),
        1,
        "the handler's event is inside the call's span: {call:#?}"
    );
    let each: Vec<_> = process.iter().filter(|s| s.field("messaging.message.id").is_some()).collect();
    assert_eq!(each.len(), 2, "one span per message attempt: {process:#?}");
    for s in &each {
        let id = s.field("messaging.message.id").unwrap();
        assert_eq!(s.parent, Some(call.index), "message {id}: a child of the call's span");
        assert_eq!(s.links, vec![sends[0].index], "message {id}: linked to its publish");
        assert_eq!(s.field("tidings.delivery.attempt"), Some("1"));
        let settled = if id == ids[1].as_str() { "dead_letter" } else { "ack" };
        assert_eq!(s.events_with("tidings.settle", settled).len(), 1, "message {id} is settled in its span: {s:#?}");
    }
    bus.shutdown(t.patience).await;
}

/// On an exactly-once topic a batch handler keeps the guarantee: a republished id is handed over once, before and
/// after its ack, each message acked on its own.
pub async fn batch_exactly_once_dedup<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    support::require(&bus, bus.capabilities().exactly_once, "batch_exactly_once_dedup", "exactly_once");
    let topic = topic::<Event>("batch-exactly-once", TopicConfig::exactly_once());
    let seen = Batches::default();
    let cfg = sub_config(&t, 5).with_max_messages(10).with_max_wait(Duration::from_millis(200));
    bus.subscribe_batch(&topic, "sub", cfg, acking(&seen, Duration::ZERO)).await.unwrap();
    let id = topic.publish(&bus, &Event::new(1)).await.unwrap();
    topic.publish_with(&bus, &Event::new(1), PublishOptions::new().id(id.clone())).await.unwrap();
    assert!(wait_until(t.patience, || seen.count() >= 1).await, "the message was handed over");
    topic.publish_with(&bus, &Event::new(1), PublishOptions::new().id(id.clone())).await.unwrap();
    topic.publish(&bus, &Event::new(2)).await.unwrap();
    assert!(wait_until(t.patience, || seen.count() >= 2).await, "the second message was handed over");
    tokio::time::sleep(t.ack_deadline * 2).await;
    assert_eq!(seen.attempts(), [(1, vec![1]), (2, vec![1])].into(), "a republished id is handed over once");
    bus.shutdown(t.patience).await;
}
