//! The reference backend: a whole tidings backend in one file, in memory, written to be read before you write your
//! own (`tidings-local` is the in-memory bus tuned for speed; this one is tuned for reading).
//!
//! **The model.** A topic copies each message into each of its subscriptions; in a subscription's queue a message is
//! *ready* (in publish order, by a sequence number given on arrival), *leased* (handed out under an ack token until a
//! deadline, then ready again: a redelivery, one attempt more; a nack with a delay leases it to nobody until then) or
//! *dead* (in the dead-letter queue with its reason). All state sits behind one `Mutex`; one [`Notify`], the *bell*,
//! rings after each change that can make a message ready, and a waiting `receive` also wakes when a lease runs out.
//!
//! **The contract, method by method.** A driver does one thing per call and never retries: core owns encoding,
//! retries, backoff, concurrency, the dead-letter decision and lease extension, and calls these to carry them out.
//! - [`Backend::capabilities`]: what the backend does natively, trusted by core: `ordering` and `exactly_once` here
//!   (core would complete ordering otherwise), `nack_delay` (backoff handed to `nack`), `backlog`, the `max_*`
//!   limits core checks and splits by, `atomic_publish` (one `publish` call is all or nothing: here, one lock).
//! - [`Backend::topic`], [`Backend::subscription`]: create the resource, or return it with its messages.
//! - `publish`: copies the batch into every subscription that exists now; exactly-once topics drop an id seen within
//!   the retention.
//! - `receive`: leases up to `max` ready messages, waiting up to `wait` for one. Ordered topics skip a message whose
//!   key is held by a leased one, so a key has one message out and a redelivery (back in its place) goes first.
//! - `ack` removes deliveries; a token whose lease ran out is ignored, so a late ack never removes a newer delivery.
//!   `nack` returns them, at once or after a delay; `extend_lease` moves their deadline to `now + by`.
//! - `dead_letter` moves deliveries to the dead-letter queue with their reason and attempt count;
//!   `dead_letter_queue` hands that queue out as [`DeadLetters`]: `read` pages through it (a cursor is the last
//!   letter's number), `restore` moves letters back (attempts from zero, trace context kept), `delete` drops them.
//!   Core's one sweep drives it for `Subscription::redrive` and the operator.
//! - Delayed delivery (`delay`, native here): a message published with a due time waits in the queue's *scheduled*
//!   list and is enqueued (given its sequence number, so it takes its place in its key's order) when due; `cancel`
//!   removes it from there. Backends that cannot keep it themselves leave `delay` off and core holds it instead.
//! - `backlog`: messages not yet acked or dead-lettered; `backlog_detail` adds how many of them are scheduled (in the
//!   scheduled list and not yet due), which only a backend keeping delays itself can tell.
//!
//! Left out: persistence, retention expiry, the operator's [`Backend::admin`], API call counting.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tidings_core::backend::dedup::SeenIds;
use tidings_core::backend::{AckId, DeadLetterRequest, OutgoingMessage, ReceivedMessage, SubscriptionSpec, TopicSpec};
use tidings_core::dead_letter::{DeadLetters, HeldLetter, LetterPage};
use tidings_core::{
    Backend, BacklogDetail, Capabilities, DeadLetter, Error, MessageId, PublishReport, Result, SubscriptionConfig,
};
use tidings_core::{SubscriptionDriver, TopicDriver};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The reference backend. Clones share one broker.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    broker: Arc<Broker>,
}

impl Reference {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }
}

/// All state behind one lock (topic -> subscription -> queue), and the bell.
#[derive(Debug, Default)]
struct Broker {
    topics: Mutex<HashMap<String, HashMap<String, Queue>>>,
    bell: Notify,
}

#[async_trait]
impl Backend for Reference {
    fn name(&self) -> &str {
        "reference"
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        (caps.ordering, caps.exactly_once, caps.nack_delay, caps.backlog, caps.atomic_publish) =
            (true, true, true, true, true);
        caps.max_message_size = 1024 * 1024;
        (caps.max_publish_batch, caps.max_receive_batch, caps.max_attributes) = (1000, 100, 100);
        (caps.delay, caps.max_native_delay, caps.max_delay) = (true, Duration::MAX, Duration::MAX);
        caps
    }

    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>> {
        self.broker.topics.lock().unwrap().entry(spec.resource.clone()).or_default();
        Ok(Arc::new(TopicHandle { broker: self.broker.clone(), topic: spec.resource.clone() }))
    }

    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>> {
        let (topic, name) = (spec.topic.resource.clone(), spec.resource.clone());
        let mut topics = self.broker.topics.lock().unwrap();
        let queue = topics.entry(topic.clone()).or_default().entry(name.clone()).or_insert_with(|| Queue {
            ordered: spec.topic.config.ordered,
            seen: spec.topic.config.is_exactly_once().then(|| SeenIds::new(spec.config.message_retention)),
            ..Queue::default()
        });
        queue.config = spec.config; // Subscribing again may change the settings, never the messages.
        Ok(Arc::new(SubscriptionHandle { broker: self.broker.clone(), topic, name }))
    }
}

/// The publisher driver of one topic.
#[derive(Debug)]
struct TopicHandle {
    broker: Arc<Broker>,
    topic: String,
}

#[async_trait]
impl TopicDriver for TopicHandle {
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport> {
        let now = Instant::now();
        let mut topics = self.broker.topics.lock().unwrap();
        for queue in topics.get_mut(&self.topic).expect("created by Backend::topic").values_mut() {
            batch.iter().for_each(|m| queue.accept(m.clone(), now));
        }
        drop(topics);
        self.broker.bell.notify_waiters();
        Ok(PublishReport::accepted())
    }

    async fn cancel(&self, id: &MessageId) -> Result<bool> {
        let mut topics = self.broker.topics.lock().unwrap();
        let mut removed = false;
        for queue in topics.get_mut(&self.topic).expect("created by Backend::topic").values_mut() {
            let before = queue.scheduled.len();
            queue.scheduled.retain(|(_, m)| m.id != *id);
            removed |= queue.scheduled.len() != before;
        }
        Ok(removed)
    }
}

/// The driver of one subscription.
#[derive(Debug)]
struct SubscriptionHandle {
    broker: Arc<Broker>,
    topic: String,
    name: String,
}

impl SubscriptionHandle {
    /// Runs `f` on the queue, under the lock.
    fn queue<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> R {
        let mut topics = self.broker.topics.lock().unwrap();
        f(topics.get_mut(&self.topic).and_then(|t| t.get_mut(&self.name)).expect("created by Backend::subscription"))
    }

    /// Runs `f` on the queue and rings the bell: messages may have become ready.
    fn change<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> R {
        let out = self.queue(f);
        self.broker.bell.notify_waiters();
        out
    }
}

#[async_trait]
impl SubscriptionDriver for SubscriptionHandle {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let give_up = Instant::now() + wait;
        loop {
            // Listen for the bell before looking, so a change between the look and the wait is not missed.
            let mut bell = std::pin::pin!(self.broker.bell.notified());
            bell.as_mut().enable();
            let now = Instant::now();
            let (got, next_due) = self.queue(|q| (q.take(max, now), q.next_due()));
            if !got.is_empty() || now >= give_up {
                return Ok(got);
            }
            let until = next_due.map_or(give_up, |due| due.min(give_up));
            tokio::select! {
                _ = bell => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
        self.change(|q| ids.iter().for_each(|id| drop(q.settle(id)))); // A freed ordering key makes its next ready.
        Ok(())
    }

    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()> {
        let now = Instant::now();
        self.change(|q| {
            for (id, delay) in items {
                if let Some(entry) = q.settle(&id) {
                    q.lease(entry, now + delay); // To nobody: ready again once the delay is over.
                }
            }
        });
        Ok(())
    }

    async fn extend_lease(&self, ids: Vec<AckId>, by: Duration) -> Result<()> {
        let deadline = Instant::now() + by;
        self.queue(|q| {
            for id in &ids {
                if let Some(lease) = q.leased.get_mut(id) {
                    lease.0 = deadline;
                }
            }
        });
        Ok(())
    }

    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()> {
        self.change(|q| {
            for DeadLetterRequest { message, reason, .. } in items {
                let Some(Entry { msg, attempts, .. }) = q.settle(&message.ack_id) else { continue };
                let key = msg.ordering_key.as_deref().map(str::to_string);
                let letter =
                    DeadLetter::new(msg.id, msg.payload, msg.publish_time, attempts, reason, SystemTime::now())
                        .with_attributes(msg.attributes)
                        .with_ordering_key(key);
                q.next_token += 1; // Dead letters are numbered from the token counter: in order, never reused.
                q.dead.push_back(HeldLetter::new(AckId::Num(q.next_token), letter).with_trace(msg.trace));
            }
        });
        Ok(())
    }

    fn dead_letter_queue(self: Arc<Self>) -> Option<Arc<dyn DeadLetters>> {
        Some(self)
    }

    async fn backlog(&self) -> Result<Option<u64>> {
        Ok(Some(self.queue(|q| q.ready.len() + q.leased.len() + q.scheduled.len()) as u64))
    }

    async fn backlog_detail(&self) -> Result<BacklogDetail> {
        // One look under the lock: the backlog and, of it, the scheduled messages not yet due (a nacked message
        // waiting out its backoff is leased to nobody, so it never counts as scheduled).
        let now = Instant::now();
        let (total, scheduled) = self.queue(|q| {
            let due_later = q.scheduled.iter().filter(|(at, _)| *at > now).count();
            (q.ready.len() + q.leased.len() + q.scheduled.len(), due_later)
        });
        Ok(BacklogDetail::new(Some(total as u64)).with_scheduled(Some(scheduled as u64)))
    }
}

/// The dead-letter queue: letters in the order they came, each under its number; a cursor is the last number read.
#[async_trait]
impl DeadLetters for SubscriptionHandle {
    async fn read(&self, cursor: Option<&str>, max: usize) -> Result<LetterPage> {
        let after: u64 = cursor.map_or(Ok(0), |c| c.parse().map_err(|_| Error::invalid(format!("cursor {c:?}"))))?;
        let number = |h: &HeldLetter| if let AckId::Num(n) = h.handle { n } else { 0 };
        let mut later: Vec<HeldLetter> = self.queue(|q| q.dead.iter().filter(|h| number(h) > after).cloned().collect());
        let next = (max > 0 && later.len() > max).then(|| number(&later[max - 1]).to_string());
        later.truncate(max);
        Ok(LetterPage::new(later, next))
    }

    async fn restore(&self, letters: Vec<HeldLetter>) -> Result<()> {
        self.change(|q| {
            for h in letters {
                let Some(at) = q.dead.iter().position(|d| d.handle == h.handle) else { continue };
                let HeldLetter { letter: d, trace, .. } = q.dead.remove(at).expect("found above");
                let key = d.ordering_key.as_deref().map(Arc::from);
                let msg = OutgoingMessage::new(d.id, d.payload, d.attributes, key, d.publish_time).with_trace(trace);
                q.enqueue(msg); // Not through `accept`: a redriven id is no duplicate. Attempts start at 0.
            }
        });
        Ok(())
    }

    async fn delete(&self, handles: Vec<AckId>) -> Result<()> {
        self.queue(|q| q.dead.retain(|h| !handles.contains(&h.handle)));
        Ok(())
    }
}

/// A message in a subscription's queue.
#[derive(Debug)]
struct Entry {
    /// Its place in publish order.
    seq: u64,
    msg: OutgoingMessage,
    /// Deliveries so far.
    attempts: u32,
}

/// One subscription's messages. `ready` stays sorted by `seq`.
#[derive(Debug, Default)]
struct Queue {
    config: SubscriptionConfig,
    ordered: bool,
    /// Ids accepted within the retention, on exactly-once topics.
    seen: Option<SeenIds<MessageId>>,
    next_seq: u64,
    next_token: u64,
    ready: VecDeque<Entry>,
    /// Ack token -> (lease deadline, message).
    leased: HashMap<AckId, (Instant, Entry)>,
    /// Messages published with a due time, not yet due: enqueued then.
    scheduled: Vec<(Instant, OutgoingMessage)>,
    dead: VecDeque<HeldLetter>,
}

impl Queue {
    /// A published message: enqueued, unless exactly-once and its id was seen.
    fn accept(&mut self, msg: OutgoingMessage, now: Instant) {
        if !self.seen.as_mut().is_none_or(|seen| seen.insert(msg.id.clone(), now)) {
            return;
        }
        match msg.deliver_at.and_then(|at| at.duration_since(SystemTime::now()).ok()) {
            Some(left) if !left.is_zero() => self.scheduled.push((now + left, msg)),
            _ => self.enqueue(msg),
        }
    }

    fn enqueue(&mut self, msg: OutgoingMessage) {
        self.ready.push_back(Entry { seq: self.next_seq, msg, attempts: 0 });
        self.next_seq += 1;
    }

    /// Ready again, in its place by sequence number (so before later messages of its ordering key).
    fn put_back(&mut self, entry: Entry) {
        let at = self.ready.partition_point(|e| e.seq < entry.seq);
        self.ready.insert(at, entry);
    }

    /// Ends a lease and returns its message; `None` if the token is unknown or its lease already ran out.
    fn settle(&mut self, id: &AckId) -> Option<Entry> {
        self.leased.remove(id).map(|(_, entry)| entry)
    }

    /// Leases `entry` until `until` under a new token, which it returns.
    fn lease(&mut self, entry: Entry, until: Instant) -> AckId {
        self.next_token += 1;
        self.leased.insert(AckId::Num(self.next_token), (until, entry));
        AckId::Num(self.next_token)
    }

    /// Makes the messages whose lease ran out ready again, and enqueues those whose due time came.
    fn return_expired(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.scheduled).into_iter().partition(|(at, _)| *at <= now);
        self.scheduled = later;
        due.into_iter().for_each(|(_, msg)| self.enqueue(msg));
        let expired: Vec<AckId> =
            self.leased.iter().filter(|(_, (until, _))| *until <= now).map(|(id, _)| id.clone()).collect();
        for id in expired {
            let (_, entry) = self.leased.remove(&id).expect("listed above");
            self.put_back(entry);
        }
    }

    /// When the next lease runs out or the next scheduled message is due.
    fn next_due(&self) -> Option<Instant> {
        self.leased.values().map(|(until, _)| *until).chain(self.scheduled.iter().map(|(at, _)| *at)).min()
    }

    /// Leases up to `max` ready messages for the ack deadline.
    fn take(&mut self, max: usize, now: Instant) -> Vec<ReceivedMessage> {
        self.return_expired(now);
        // On ordered topics, the keys of leased messages: later messages of these keys wait.
        let mut held: HashSet<Arc<str>> = HashSet::new();
        if self.ordered {
            held.extend(self.leased.values().filter_map(|(_, e)| e.msg.ordering_key.clone()));
        }
        let (mut got, mut i) = (Vec::new(), 0);
        while got.len() < max && i < self.ready.len() {
            if let Some(key) = self.ready[i].msg.ordering_key.as_ref().filter(|_| self.ordered) {
                if !held.insert(key.clone()) {
                    i += 1; // Its key is out (or taken earlier in this batch): it waits.
                    continue;
                }
            }
            let mut entry = self.ready.remove(i).expect("i < len");
            entry.attempts += 1;
            let (m, attempt) = (&entry.msg, entry.attempts);
            let mut delivery =
                ReceivedMessage::new(AckId::Num(0), m.id.clone(), m.payload.clone(), m.publish_time, attempt)
                    .with_attributes(m.attributes.clone())
                    .with_ordering_key(m.ordering_key.clone())
                    .with_trace(m.trace.clone());
            delivery.ack_id = self.lease(entry, now + self.config.ack_deadline);
            got.push(delivery);
        }
        got
    }
}
