//! A subscription's inbox: publishers put new messages here, under a lock of their own, rather than into the queue,
//! whose lock a receiver holds while it leases a batch (a long hold under a busy consumer). Whoever locks the queue
//! next moves the inbox's messages in first, in publish order, so the queue's behaviour is the same as if they had
//! gone straight in.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use tidings_core::SubscriptionConfig;
use tokio::time::Instant;

use crate::queue::{Queue, Stored};

/// Messages published since the queue's last lock, each with the time it was published.
#[derive(Debug)]
pub(crate) struct Inbox {
    /// The subscription's config, as its queue has it (the backlog limit is checked here).
    pub config: SubscriptionConfig,
    entries: Vec<(Stored, Instant)>,
}

impl Inbox {
    pub fn new(config: SubscriptionConfig) -> Self {
        Inbox { config, entries: Vec::new() }
    }

    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Adds published messages; returns whether the inbox was empty (a receiver waiting for messages must be woken:
    /// it waits only after moving the inbox in and finding nothing ready).
    pub fn push(&mut self, msgs: impl IntoIterator<Item = Stored>, now: Instant) -> bool {
        let was_empty = self.entries.is_empty();
        self.entries.extend(msgs.into_iter().map(|m| (m, now)));
        was_empty
    }
}

/// The queue, locked, with the inbox moved in. When it is dropped, the queue's backlog is published to `held` (what
/// publishers check the limit against, beside the inbox's length, without taking the queue's lock).
pub(crate) struct Locked<'a> {
    queue: parking_lot::MutexGuard<'a, Queue>,
    held: &'a AtomicU64,
}

impl<'a> Locked<'a> {
    pub fn new(
        mut queue: parking_lot::MutexGuard<'a, Queue>,
        inbox: &parking_lot::Mutex<Inbox>,
        held: &'a AtomicU64,
    ) -> Self {
        let mut inbox = inbox.lock();
        if !inbox.entries.is_empty() {
            // Counted as held before they leave the inbox, so a publisher (which reads both under the inbox's lock)
            // never sees them in neither place.
            held.fetch_add(inbox.len(), SeqCst);
            for (m, at) in inbox.entries.drain(..) {
                queue.push([m], at);
            }
        }
        drop(inbox);
        Locked { queue, held }
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        &self.queue
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Queue {
        &mut self.queue
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.held.store(self.queue.backlog(), SeqCst);
    }
}
