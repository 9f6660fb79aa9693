//! The in-memory backend of tidings: in-process, zero set-up, the default when nothing is configured. Each
//! subscription has its own queue with leases, attempt counting, delayed redelivery, a dead-letter queue, ordering
//! keys and de-duplication, so code tested on it behaves as on a broker. State lives as long as the [`LocalBackend`]
//! (clones share it).
//!
//! Configuration, how tidings maps onto it, its limits and how to operate it: the book's
//! [in-memory page](https://example.invalid/tidings/book/backends/in-memory.html).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use serde::{Deserialize, Serialize};
//! use tidings_core::{Bus, Message, SubscriptionConfig, Topic, TopicConfig};
//! use tidings_local::{LocalBackend, LocalConfig};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SignupEvent {
//!     user_id: u64,
//! }
//!
//! static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tidings_core::Result<()> {
//! let mut config = LocalConfig::default();
//! config.max_backlog = 1_000; // `[local]` in tidings.toml; the default is 100,000
//! let bus = Bus::new(Arc::new(LocalBackend::with_config(config))); // what `tidings::local()` builds, with defaults
//! let email = bus
//!     .subscribe(&SIGNUPS, "email", SubscriptionConfig::default(), |m: Message<SignupEvent>| async move {
//!         println!("welcome, user {}", m.user_id);
//!         Ok(())
//!     })
//!     .await?;
//! SIGNUPS.publish(&bus, &SignupEvent { user_id: 42 }).await?;
//! assert!(email.wait_idle(Duration::from_secs(5)).await?);
//! # bus.shutdown(Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod inbox;
mod queue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tidings_core::backend::{
    AckId, BackendInfo, DeadLetterRequest, OutgoingMessage, PublishReport, ReceivedMessage, SubscriptionDriver,
    SubscriptionSpec, TopicDriver, TopicSpec,
};
use tidings_core::dead_letter::{DeadLetters, HeldLetter, LetterPage};
use tidings_core::{Backend, Capabilities, Error, ErrorKind, Result, Settings, WhenFull};
use tokio::sync::Notify;
use tokio::time::Instant;

use inbox::{Inbox, Locked};
use queue::{Queue, Stored};

/// Default largest message: 10 MiB, like Google Pub/Sub.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;

/// Default backlog limit of a subscription (messages ready, delayed or leased) when its config sets none: past it a
/// publish waits (or fails, with `when_full = "fail"`), so a stalled subscription cannot exhaust memory.
pub const DEFAULT_MAX_BACKLOG: u64 = 100_000;

/// The `[local]` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LocalConfig {
    /// Largest message in bytes (payload plus attributes); default 10 MiB.
    #[serde(default = "default_max")]
    pub max_message_size: usize,
    /// Backlog limit of a subscription whose config sets none ([`DEFAULT_MAX_BACKLOG`]).
    #[serde(default = "default_max_backlog")]
    pub max_backlog: u64,
}

fn default_max_backlog() -> u64 {
    DEFAULT_MAX_BACKLOG
}

fn default_max() -> usize {
    DEFAULT_MAX_MESSAGE_SIZE
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self { max_message_size: DEFAULT_MAX_MESSAGE_SIZE, max_backlog: DEFAULT_MAX_BACKLOG }
    }
}

/// The in-memory bus. Clones share state.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    caps: Capabilities,
    max_backlog: u64,
    topics: Arc<Mutex<HashMap<String, Arc<LocalTopic>>>>,
}

impl Default for LocalBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalBackend {
    /// A bus with the default settings.
    pub fn new() -> Self {
        Self::with_config(LocalConfig::default())
    }

    /// A bus with these settings.
    pub fn with_config(config: LocalConfig) -> Self {
        let mut caps = Capabilities::default();
        caps.ordering = true;
        caps.exactly_once = true;
        caps.nack_delay = true;
        caps.max_message_size = config.max_message_size;
        caps.max_publish_batch = 1000;
        // `publish_now` takes a batch of any size under every subscription's inbox lock, all or nothing.
        caps.atomic_publish = true;
        caps.max_receive_batch = 256;
        // A batch handler's batch is a vector in memory, settled under the queue's lock in one call.
        caps.max_batch_messages = 10_000;
        caps.max_attributes = 100;
        caps.backlog = true;
        caps.bounded_backlog = true;
        // Delayed messages wait in each subscription's delay heap (the one its nack delays use).
        caps.delay = true;
        caps.max_native_delay = Duration::MAX;
        caps.max_delay = Duration::MAX;
        Self { caps, max_backlog: config.max_backlog.max(1), topics: Arc::default() }
    }

    /// Reads the `[local]` section (`TIDINGS_LOCAL__MAX_MESSAGE_SIZE`, `TIDINGS_LOCAL__MAX_BACKLOG`).
    pub fn from_settings(settings: &Settings) -> Result<Self> {
        Ok(Self::with_config(settings.section("local")?))
    }

    /// Declares that nacks cannot carry a delay, so the runtime's client-side fallback (hold the message, keep its
    /// lease, nack after the backoff) runs. For testing that path; the local bus itself supports delays.
    pub fn without_nack_delay(mut self) -> Self {
        self.caps.nack_delay = false;
        self
    }

    fn topic_state(&self, spec: &TopicSpec) -> Arc<LocalTopic> {
        let mut topics = self.topics.lock().unwrap();
        topics
            .entry(spec.resource.clone())
            .or_insert_with(|| {
                Arc::new(LocalTopic {
                    name: spec.resource.clone(),
                    ordered: spec.config.ordered,
                    exactly_once: spec.config.is_exactly_once(),
                    subs: RwLock::default(),
                    space: Arc::default(),
                })
            })
            .clone()
    }
}

/// The in-memory bus's names: its state lives in one process.
pub fn info() -> BackendInfo {
    BackendInfo::new("local").in_process()
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &str {
        "local"
    }

    fn info(&self) -> BackendInfo {
        info()
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>> {
        Ok(self.topic_state(spec))
    }

    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>> {
        let topic = self.topic_state(&spec.topic);
        let mut subs = topic.subs.write().unwrap();
        if let Some(s) = subs.iter().find(|s| s.name == spec.resource) {
            let mut q = s.queue();
            q.config = spec.config;
            s.inbox.lock().config = spec.config;
            drop(q);
            return Ok(s.clone());
        }
        let sub = Arc::new(LocalSubscription {
            name: spec.resource.clone(),
            queue: parking_lot::Mutex::new(Queue::new(spec.config, topic.ordered, topic.exactly_once)),
            inbox: parking_lot::Mutex::new(Inbox::new(spec.config)),
            held: AtomicU64::new(0),
            notify: Notify::new(),
            default_limit: self.max_backlog,
            space: topic.space.clone(),
        });
        subs.push(sub.clone());
        Ok(sub)
    }
}

/// A topic: the list of its subscriptions' queues.
#[derive(Debug)]
struct LocalTopic {
    name: String,
    ordered: bool,
    exactly_once: bool,
    subs: RwLock<Vec<Arc<LocalSubscription>>>,
    /// Wakes publishers waiting for a full subscription to make room.
    space: Arc<Room>,
}

/// Publishers waiting for room in a topic's subscriptions, and their wake-up. Settling messages is the hot path, and
/// it only touches the notifier (a lock) while some publisher waits.
#[derive(Debug, Default)]
struct Room {
    notify: Notify,
    waiting: AtomicUsize,
}

impl Room {
    /// Counts a publisher as waiting until the guard drops (also when its publish is cancelled).
    fn wait(&self) -> impl Drop + '_ {
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Counted(&self.waiting)
    }

    /// Room was made (messages left a backlog): wakes the publishers waiting for it, if any.
    fn made(&self) {
        // SeqCst pairs with the waiter's increment: a publisher that counted itself before its last (locked) check
        // of the backlogs is seen here, after this settlement's (locked) change of a backlog.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

impl LocalTopic {
    /// The error, or `None` for "wait", of a publish that found `sub` (its inbox locked as `inbox`) at its backlog
    /// limit.
    fn refuse(&self, sub: &LocalSubscription, inbox: &Inbox) -> Option<Option<tidings_core::Error>> {
        let limit = inbox.config.max_backlog.unwrap_or(sub.default_limit);
        let backlog = sub.held.load(Ordering::SeqCst) + inbox.len();
        if backlog < limit {
            return None;
        }
        Some(match inbox.config.when_full {
            WhenFull::Wait => None,
            WhenFull::Fail => Some(tidings_core::Error::new(
                ErrorKind::BacklogFull,
                format!(
                    "subscription {:?} of topic {:?} holds {backlog} messages, at its max_backlog of {limit}; it \
                     refuses more until its handlers catch up (when_full = \"fail\"; \"wait\" would wait instead)",
                    sub.name, self.name
                ),
            )),
        })
    }
}

#[async_trait]
impl TopicDriver for LocalTopic {
    /// Waits while a subscription that says `when_full = "wait"` is at its backlog limit (`publish_now` declines).
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport> {
        let mut batch = batch.to_vec();
        loop {
            let room = self.space.notify.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            let _counted = self.space.wait();
            if let Some(outcome) = self.publish_now(&mut batch) {
                return outcome.map(|()| PublishReport::accepted());
            }
            room.await;
        }
    }

    /// All or nothing: every subscription's inbox is locked, and the batch goes to none of them while one is at its
    /// backlog limit (`None`: wait for room; or its error).
    fn publish_now(&self, batch: &mut [OutgoingMessage]) -> Option<Result<()>> {
        let now = Instant::now();
        let subs = self.subs.read().unwrap();
        tracing::trace!(topic = %self.name, n = batch.len(), subscriptions = subs.len(), "publish");
        let Some((last, others)) = subs.split_last() else { return Some(Ok(())) };
        let mut inboxes: Vec<_> = others.iter().map(|s| s.inbox.lock()).collect();
        let mut last_inbox = last.inbox.lock();
        for (s, inbox) in others.iter().zip(&inboxes).chain(std::iter::once((last, &last_inbox))) {
            if let Some(refusal) = self.refuse(s, inbox) {
                return refusal.map(Err);
            }
        }
        // Each message becomes a queue entry once; every subscription but the last gets a clone of it (sharing the
        // payload and the extras), the last the entry itself. A single message (the common case) needs no vector.
        let mut woken = Vec::new();
        let mut fan_out = |entries: &[Stored]| {
            for (s, inbox) in others.iter().zip(inboxes.iter_mut()) {
                if inbox.push(entries.iter().cloned(), now) {
                    woken.push(s);
                }
            }
        };
        let last_woken = match batch {
            [m] => {
                let entry = Stored::take(m);
                fan_out(std::slice::from_ref(&entry));
                last_inbox.push([entry], now)
            }
            _ => {
                let entries: Vec<Stored> = batch.iter_mut().map(Stored::take).collect();
                fan_out(&entries);
                last_inbox.push(entries, now)
            }
        };
        drop((inboxes, last_inbox));
        for s in woken {
            s.notify.notify_waiters();
        }
        if last_woken {
            last.notify.notify_waiters();
        }
        Some(Ok(()))
    }

    async fn cancel(&self, id: &tidings_core::MessageId) -> Result<bool> {
        let subs = self.subs.read().unwrap().clone();
        let mut removed = false;
        for s in subs {
            if s.queue().cancel(id) {
                removed = true;
                s.space.made();
            }
        }
        Ok(removed)
    }
}

/// A subscription's queue plus the wake-up for waiting receivers.
#[derive(Debug)]
struct LocalSubscription {
    name: String,
    /// Lock it with [`LocalSubscription::queue`], which moves the inbox in.
    queue: parking_lot::Mutex<Queue>,
    /// Published messages not yet in the queue.
    inbox: parking_lot::Mutex<Inbox>,
    /// The queue's backlog as of its last unlock (plus messages on their way in from the inbox).
    held: AtomicU64,
    notify: Notify,
    /// Backlog limit when the config sets none.
    default_limit: u64,
    /// The topic's wake-up for publishers waiting for room.
    space: Arc<Room>,
}

impl LocalSubscription {
    /// The queue, locked, with the inbox's messages moved in.
    fn queue(&self) -> Locked<'_> {
        Locked::new(self.queue.lock(), &self.inbox, &self.held)
    }
}

#[async_trait]
impl SubscriptionDriver for LocalSubscription {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let give_up = Instant::now() + wait;
        let mut out = Vec::with_capacity(max.min(256));
        // Fast path: messages are ready, no need to register for a wake-up.
        self.queue().take(max, Instant::now(), &mut out);
        if !out.is_empty() {
            return Ok(out);
        }
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let next_due = {
                let mut q = self.queue();
                q.take(max, now, &mut out);
                q.next_due()
            };
            if !out.is_empty() || now >= give_up {
                return Ok(out);
            }
            let until = next_due.map_or(give_up, |t| t.min(give_up));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
        if self.queue().ack(&ids) {
            self.notify.notify_waiters();
        }
        self.space.made();
        Ok(())
    }

    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()> {
        self.queue().nack(&items, Instant::now());
        self.notify.notify_waiters();
        Ok(())
    }

    async fn extend_lease(&self, ids: Vec<AckId>, by: Duration) -> Result<()> {
        self.queue().extend(&ids, by, Instant::now());
        Ok(())
    }

    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()> {
        self.queue().dead_letter(items);
        self.notify.notify_waiters();
        self.space.made();
        Ok(())
    }

    fn dead_letter_queue(self: Arc<Self>) -> Option<Arc<dyn DeadLetters>> {
        Some(self)
    }

    async fn backlog(&self) -> Result<Option<u64>> {
        Ok(Some(self.queue().backlog()))
    }

    async fn backlog_detail(&self) -> Result<tidings_core::BacklogDetail> {
        let q = self.queue();
        let detail = tidings_core::BacklogDetail::new(Some(q.backlog()));
        Ok(detail.with_scheduled(Some(q.scheduled(Instant::now()))))
    }
}

/// The dead-letter queue: numbered letters in the order they came; a cursor is the last number read.
#[async_trait]
impl DeadLetters for LocalSubscription {
    async fn read(&self, cursor: Option<&str>, max: usize) -> Result<LetterPage> {
        let after = cursor
            .map(|c| {
                c.parse::<u64>()
                    .map_err(|_| Error::invalid(format!("dead-letter cursor {c:?} is not one this bus gave out")))
            })
            .transpose()?;
        let (letters, more) = self.queue().read_letters(after, max);
        let next = match letters.last() {
            Some(HeldLetter { handle: AckId::Num(n), .. }) if more => Some(n.to_string()),
            _ => None,
        };
        Ok(LetterPage::new(letters, next))
    }

    async fn restore(&self, letters: Vec<HeldLetter>) -> Result<()> {
        let handles: Vec<AckId> = letters.into_iter().map(|h| h.handle).collect();
        self.queue().restore(&handles, Instant::now());
        self.notify.notify_waiters();
        Ok(())
    }

    async fn delete(&self, handles: Vec<AckId>) -> Result<()> {
        self.queue().delete_letters(&handles);
        Ok(())
    }
}
