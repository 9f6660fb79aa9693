//! One subscription's queue: ready messages, delayed redeliveries, leases with deadlines, ordering-key locks,
//! exactly-once de-duplication, retention, and the dead-letter queue. All state sits behind one mutex; every
//! operation is a batch so the lock is taken once per call.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tidings_core::backend::dedup::SeenIds;
use tidings_core::backend::time::{from_micros, micros};
use tidings_core::backend::{AckId, DeadLetterRequest, OutgoingMessage, ReceivedMessage};
use tidings_core::dead_letter::HeldLetter;
use tidings_core::trace::TraceContext;
use tidings_core::{Attributes, DeadLetter, MessageId, SubscriptionConfig};
use tokio::time::Instant;

/// A published message as a subscription's queue holds it, inline (no allocation of its own: each subscription
/// keeps a copy, which shares the payload and the extras). Kept small (88 bytes; a backlog holds millions):
/// attributes and ordering key, absent from most messages, sit behind one optional shared pointer, and the publish
/// time is microseconds since the Unix epoch.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub id: MessageId,
    pub payload: Bytes,
    extra: Option<Arc<Extra>>,
    publish_micros: i64,
}

#[derive(Debug)]
struct Extra {
    attributes: Attributes,
    ordering_key: Option<Arc<str>>,
    trace: Option<TraceContext>,
    /// Published with a due time: no subscription gets it before then.
    deliver_at: Option<SystemTime>,
}

impl Stored {
    pub fn new(
        id: MessageId,
        payload: Bytes,
        attributes: Attributes,
        ordering_key: Option<Arc<str>>,
        publish_time: SystemTime,
    ) -> Self {
        let extra = (!attributes.is_empty() || ordering_key.is_some())
            .then(|| Arc::new(Extra { attributes, ordering_key, trace: None, deliver_at: None }));
        Stored { id, payload, extra, publish_micros: micros(publish_time) }
    }

    pub fn ordering_key(&self) -> Option<&Arc<str>> {
        self.extra.as_ref().and_then(|x| x.ordering_key.as_ref())
    }

    pub fn attributes(&self) -> Attributes {
        self.extra.as_ref().map(|x| x.attributes.clone()).unwrap_or_default()
    }

    pub fn publish_time(&self) -> SystemTime {
        from_micros(self.publish_micros)
    }

    pub fn trace(&self) -> Option<TraceContext> {
        self.extra.as_ref().and_then(|x| x.trace.clone())
    }

    /// The due time it was published with, if any.
    pub fn deliver_at(&self) -> Option<SystemTime> {
        self.extra.as_ref().and_then(|x| x.deliver_at)
    }

    /// The extras, made if there were none, before the message is stored.
    fn extra_mut(&mut self) -> &mut Extra {
        let x = self.extra.get_or_insert_with(|| {
            Arc::new(Extra { attributes: Attributes::new(), ordering_key: None, trace: None, deliver_at: None })
        });
        Arc::get_mut(x).expect("extras are not shared before the message is stored")
    }

    /// The same message carrying the trace context of its publish.
    fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        if trace.is_some() {
            self.extra_mut().trace = trace;
        }
        self
    }

    /// The same message due at `at`.
    fn with_deliver_at(mut self, at: Option<SystemTime>) -> Self {
        if at.is_some() {
            self.extra_mut().deliver_at = at;
        }
        self
    }
}

impl Stored {
    /// Moves a published message in (its payload and extras; the id is copied).
    pub fn take(m: &mut OutgoingMessage) -> Self {
        let (payload, attributes) = (std::mem::take(&mut m.payload), std::mem::take(&mut m.attributes));
        Stored::new(m.id.clone(), payload, attributes, m.ordering_key.take(), m.publish_time)
            .with_trace(m.trace.take())
            .with_deliver_at(m.deliver_at)
    }
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    msg: Stored,
    /// Deliveries made so far.
    attempts: u32,
    /// When it was enqueued, in milliseconds since the queue was created (keeps `Pending` at 24 bytes).
    enqueued_ms: u32,
}

#[derive(Debug)]
struct Delayed {
    at: Instant,
    p: Pending,
}
impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.p.seq) == (o.at, o.p.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.p.seq).cmp(&(o.at, o.p.seq))
    }
}

/// Hashing for lease tokens: they are sequential numbers of our own making, so a multiplicative (Fibonacci) hash
/// spreads them well at a fraction of SipHash's cost; no outside input picks them.
#[derive(Debug, Default, Clone, Copy)]
struct TokenHash;

impl std::hash::BuildHasher for TokenHash {
    type Hasher = TokenHasher;
    fn build_hasher(&self) -> TokenHasher {
        TokenHasher(0)
    }
}

struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Debug)]
struct Lease {
    p: Pending,
    deadline: Instant,
}

#[derive(Debug)]
pub(crate) struct Queue {
    pub config: SubscriptionConfig,
    created: Instant,
    ordered: bool,
    exactly_once: bool,
    next_seq: u64,
    next_token: u64,
    ready: VecDeque<Pending>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    leased: HashMap<u64, Lease, TokenHash>,
    lease_deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Ordering key -> seq of the message that holds it (delivered, delayed or waiting for redelivery).
    key_owner: HashMap<Arc<str>, u64>,
    /// Messages waiting behind their key's owner, in publish order.
    parked: HashMap<Arc<str>, VecDeque<Pending>>,
    parked_len: usize,
    /// Exactly-once: ids accepted within the retention window.
    seen: SeenIds<MessageId>,
    /// Dead letters in the order they came, each under its number in the dead-letter queue.
    dlq: VecDeque<(u64, HeldLetter)>,
    next_letter: u64,
}

impl Queue {
    pub fn new(config: SubscriptionConfig, ordered: bool, exactly_once: bool) -> Self {
        Queue {
            config,
            created: Instant::now(),
            ordered,
            exactly_once,
            next_seq: 0,
            next_token: 0,
            ready: VecDeque::new(),
            delayed: BinaryHeap::new(),
            leased: HashMap::default(),
            lease_deadlines: BinaryHeap::new(),
            key_owner: HashMap::new(),
            parked: HashMap::new(),
            parked_len: 0,
            seen: SeenIds::new(config.message_retention),
            dlq: VecDeque::new(),
            next_letter: 0,
        }
    }

    fn millis(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.created).as_millis().min(u128::from(u32::MAX)) as u32
    }

    pub fn backlog(&self) -> u64 {
        (self.ready.len() + self.delayed.len() + self.leased.len() + self.parked_len) as u64
    }

    /// Of the backlog, the messages scheduled at `now`: published with a due time not reached yet, never delivered
    /// (the delay heap also holds failed deliveries waiting out their backoff, which have had an attempt). One pass
    /// over the delay heap.
    pub fn scheduled(&self, now: Instant) -> u64 {
        let scheduled = |d: &Delayed| d.at > now && d.p.attempts == 0 && d.p.msg.deliver_at().is_some();
        self.delayed.iter().filter(|Reverse(d)| scheduled(d)).count() as u64
    }

    /// Adds published messages; exactly-once subscriptions drop ids they already accepted. (Waking receivers is the
    /// inbox's part: messages reach the queue only when a receiver or another caller already holds it.)
    pub fn push(&mut self, msgs: impl IntoIterator<Item = Stored>, now: Instant) {
        let enqueued_ms = self.millis(now);
        for m in msgs {
            if self.exactly_once && !self.seen.insert(m.id.clone(), now) {
                continue;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            // Published with a due time: it waits in the delay heap and joins the ready queue (and its key's order)
            // when due, as if published then.
            let left = m.deliver_at().and_then(|at| at.duration_since(SystemTime::now()).ok());
            let p = Pending { seq, msg: m, attempts: 0, enqueued_ms };
            match left.filter(|d| !d.is_zero()) {
                Some(left) => self.delayed.push(Reverse(Delayed { at: Instant::now() + left, p })),
                None => self.ready.push_back(p),
            }
        }
    }

    /// Removes the scheduled message `id` (published with a due time not reached yet); whether there was one.
    pub fn cancel(&mut self, id: &MessageId) -> bool {
        let before = self.delayed.len();
        self.delayed.retain(|Reverse(d)| !(d.p.attempts == 0 && d.p.msg.deliver_at().is_some() && d.p.msg.id == *id));
        before != self.delayed.len()
    }

    /// Moves due delayed messages and expired leases back to ready.
    fn promote(&mut self, now: Instant) {
        while let Some(Reverse(d)) = self.delayed.peek() {
            if d.at > now {
                break;
            }
            let Reverse(d) = self.delayed.pop().unwrap();
            self.ready.push_back(d.p);
        }
        while let Some(Reverse((at, token))) = self.lease_deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.lease_deadlines.pop();
            if self.leased.get(&token).is_some_and(|l| l.deadline <= now) {
                let lease = self.leased.remove(&token).unwrap();
                tracing::debug!(id = %lease.p.msg.id, "ack deadline expired; redelivering");
                self.ready.push_front(lease.p);
            }
        }
    }

    /// The next instant at which a delayed message or a lease comes due.
    pub fn next_due(&self) -> Option<Instant> {
        let d = self.delayed.peek().map(|Reverse(d)| d.at);
        let l = self.lease_deadlines.peek().map(|Reverse((at, _))| *at);
        match (d, l) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Leases up to `max` messages for the ack deadline.
    pub fn take(&mut self, max: usize, now: Instant, out: &mut Vec<ReceivedMessage>) {
        self.promote(now);
        let retention = self.config.message_retention.as_millis().min(u128::from(u32::MAX)) as u32;
        let now_ms = self.millis(now);
        let deadline = now + self.config.ack_deadline;
        out.reserve(max.min(self.ready.len()));
        while out.len() < max {
            let Some(mut p) = self.ready.pop_front() else { break };
            if now_ms.saturating_sub(p.enqueued_ms) > retention {
                tracing::debug!(id = %p.msg.id, "message retention expired; dropping");
                self.release_key(&p);
                continue;
            }
            if self.ordered {
                if let Some(key) = p.msg.ordering_key() {
                    match self.key_owner.get(key) {
                        Some(&owner) if owner != p.seq => {
                            self.parked.entry(key.clone()).or_default().push_back(p);
                            self.parked_len += 1;
                            continue;
                        }
                        Some(_) => {}
                        None => {
                            self.key_owner.insert(key.clone(), p.seq);
                        }
                    }
                }
            }
            p.attempts += 1;
            let token = self.next_token;
            self.next_token += 1;
            let m = &p.msg;
            let mut r =
                ReceivedMessage::new(AckId::Num(token), m.id.clone(), m.payload.clone(), m.publish_time(), p.attempts);
            // Most messages have no extras: then the delivery keeps its empty ones (nothing built and dropped).
            if let Some(x) = &m.extra {
                r.attributes = x.attributes.clone();
                r.ordering_key = x.ordering_key.clone();
                r.trace = x.trace.clone();
            }
            out.push(r);
            self.lease_deadlines.push(Reverse((deadline, token)));
            self.leased.insert(token, Lease { p, deadline });
        }
    }

    /// Frees the ordering key `p` holds and puts the next message of that key at the front.
    fn release_key(&mut self, p: &Pending) {
        let Some(key) = p.msg.ordering_key() else { return };
        if self.key_owner.get(key) != Some(&p.seq) {
            return;
        }
        self.key_owner.remove(key);
        if let Some(q) = self.parked.get_mut(key) {
            if let Some(next) = q.pop_front() {
                self.parked_len -= 1;
                self.ready.push_front(next);
            }
            if q.is_empty() {
                self.parked.remove(key);
            }
        }
    }

    fn lease(&mut self, id: &AckId) -> Option<Lease> {
        match id {
            AckId::Num(t) => self.leased.remove(t),
            AckId::Text(_) => None,
        }
    }

    /// Acks; stale tokens (lease expired and redelivered) are ignored. Returns whether anything became ready.
    pub fn ack(&mut self, ids: &[AckId]) -> bool {
        let before = self.ready.len();
        for id in ids {
            if let Some(l) = self.lease(id) {
                self.release_key(&l.p);
            }
        }
        self.compact_deadlines();
        self.ready.len() != before
    }

    /// Lease deadlines are removed lazily; once settled leases dominate the heap, rebuild it from the live ones so it
    /// stays proportional to the messages in flight.
    fn compact_deadlines(&mut self) {
        if self.lease_deadlines.len() > 2 * self.leased.len() + 1024 {
            // In place: the heap keeps its allocation instead of being rebuilt and grown again from empty.
            let leased = &self.leased;
            self.lease_deadlines.retain(|Reverse((at, t))| leased.get(t).is_some_and(|l| l.deadline == *at));
        }
    }

    pub fn nack(&mut self, items: &[(AckId, Duration)], now: Instant) {
        for (id, delay) in items {
            if let Some(l) = self.lease(id) {
                if delay.is_zero() {
                    self.ready.push_back(l.p);
                } else {
                    self.delayed.push(Reverse(Delayed { at: now + *delay, p: l.p }));
                }
            }
        }
    }

    pub fn extend(&mut self, ids: &[AckId], by: Duration, now: Instant) {
        for id in ids {
            if let AckId::Num(t) = id {
                if let Some(l) = self.leased.get_mut(t) {
                    l.deadline = now + by;
                    self.lease_deadlines.push(Reverse((l.deadline, *t)));
                }
            }
        }
    }

    pub fn dead_letter(&mut self, items: Vec<DeadLetterRequest>) {
        for r in items {
            if let Some(l) = self.lease(&r.message.ack_id) {
                self.release_key(&l.p);
                let m = &l.p.msg;
                // Its own copy of the payload: a dead letter can stay for days, and must not keep the chunk its payload
                // was encoded into (shared with the messages published beside it) alive that long.
                let payload = Bytes::copy_from_slice(&m.payload);
                let letter =
                    DeadLetter::new(m.id.clone(), payload, m.publish_time(), l.p.attempts, r.reason, SystemTime::now())
                        .with_attributes(m.attributes())
                        .with_ordering_key(m.ordering_key().map(|k| k.to_string()));
                let n = self.next_letter;
                self.next_letter += 1;
                self.dlq.push_back((n, HeldLetter::new(AckId::Num(n), letter).with_trace(m.trace())));
            }
        }
    }

    /// Up to `max` dead letters numbered after `after`, and whether more follow them.
    pub fn read_letters(&self, after: Option<u64>, max: usize) -> (Vec<HeldLetter>, bool) {
        let start = self.dlq.partition_point(|(n, _)| after.is_some_and(|a| *n <= a));
        let out: Vec<HeldLetter> = self.dlq.iter().skip(start).take(max).map(|(_, h)| h.clone()).collect();
        (out, self.dlq.len() > start + max)
    }

    /// Removes these dead letters; returns those that were there.
    fn take_letters(&mut self, handles: &[AckId]) -> Vec<HeldLetter> {
        let wanted: std::collections::HashSet<&AckId> = handles.iter().collect();
        let mut out = Vec::new();
        self.dlq.retain(|(_, h)| {
            let take = wanted.contains(&h.handle);
            if take {
                out.push(h.clone());
            }
            !take
        });
        out
    }

    /// Puts these dead letters back as new messages (attempt counter reset); returns how many.
    pub fn restore(&mut self, handles: &[AckId], now: Instant) -> usize {
        let enqueued_ms = self.millis(now);
        let letters = self.take_letters(handles);
        for h in &letters {
            let d = h.letter.clone();
            let seq = self.next_seq;
            self.next_seq += 1;
            let msg = Stored::new(d.id, d.payload, d.attributes, d.ordering_key.map(Arc::from), d.publish_time)
                .with_trace(h.trace.clone());
            self.ready.push_back(Pending { seq, msg, attempts: 0, enqueued_ms });
        }
        letters.len()
    }

    /// Deletes these dead letters for good.
    pub fn delete_letters(&mut self, handles: &[AckId]) {
        self.take_letters(handles);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, key: Option<&str>) -> Stored {
        Stored::new(
            MessageId::from(id),
            Bytes::from_static(b"{}"),
            Attributes::new(),
            key.map(Arc::from),
            SystemTime::now(),
        )
    }

    #[test]
    fn a_stored_message_stays_small() {
        assert_eq!(std::mem::size_of::<Stored>(), 88);
        assert_eq!(std::mem::size_of::<Pending>(), 104, "a queued message, inline in its subscription's queue");
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let s = Stored::new(MessageId::from("a"), Bytes::new(), Attributes::new(), None, t);
        assert_eq!(s.publish_time(), t);
        assert!(s.extra.is_none() && s.ordering_key().is_none() && s.attributes().is_empty());
        let before = SystemTime::UNIX_EPOCH - Duration::from_micros(5);
        let k = Stored::new(MessageId::from("b"), Bytes::new(), Attributes::new(), Some("k".into()), before);
        assert_eq!((k.publish_time(), k.ordering_key().map(|k| &**k)), (before, Some("k")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_letter_holds_its_own_copy_of_the_payload() {
        let mut q = Queue::new(cfg(), false, false);
        let t0 = Instant::now();
        let payload = Bytes::from(b"{\"n\":1}".to_vec());
        let m = Stored::new(MessageId::from("a"), payload.clone(), Attributes::new(), None, SystemTime::now());
        q.push([m], t0);
        let got = take(&mut q, 1, t0);
        q.dead_letter(vec![DeadLetterRequest::new(got[0].clone(), "bad")]);
        let dl = q.read_letters(None, 10).0;
        assert_eq!(dl[0].letter.payload, payload);
        assert_ne!(dl[0].letter.payload.as_ptr(), payload.as_ptr(), "not a view into the publish-time buffer");
    }

    fn cfg() -> SubscriptionConfig {
        SubscriptionConfig::DEFAULT
            .with_ack_deadline(Duration::from_secs(10))
            .with_message_retention(Duration::from_secs(60))
    }

    fn take(q: &mut Queue, max: usize, now: Instant) -> Vec<ReceivedMessage> {
        let mut out = Vec::new();
        q.take(max, now, &mut out);
        out
    }

    #[tokio::test(start_paused = true)]
    async fn retention_expiry_drops_undelivered_messages() {
        let mut q = Queue::new(cfg(), false, false);
        let t0 = Instant::now();
        q.push([msg("a", None)], t0);
        q.push([msg("b", None)], t0 + Duration::from_secs(30));
        let got = take(&mut q, 10, t0 + Duration::from_secs(61));
        assert_eq!(got.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), vec!["b"], "a expired, b did not");
        q.ack(&[got[0].ack_id.clone()]);
        assert_eq!(q.backlog(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_ack_after_lease_expiry_is_ignored() {
        let mut q = Queue::new(cfg(), false, false);
        let t0 = Instant::now();
        q.push([msg("a", None)], t0);
        let first = take(&mut q, 1, t0);
        let second = take(&mut q, 1, t0 + Duration::from_secs(11));
        assert_eq!(second.len(), 1, "redelivered after the ack deadline");
        assert_eq!(second[0].attempt, 2);
        q.ack(&[first[0].ack_id.clone()]);
        assert_eq!(q.backlog(), 1, "the first delivery's ack no longer counts");
        q.ack(&[second[0].ack_id.clone()]);
        assert_eq!(q.backlog(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn extended_lease_is_not_redelivered() {
        let mut q = Queue::new(cfg(), false, false);
        let t0 = Instant::now();
        q.push([msg("a", None)], t0);
        let first = take(&mut q, 1, t0);
        q.extend(&[first[0].ack_id.clone()], Duration::from_secs(10), t0 + Duration::from_secs(8));
        assert!(take(&mut q, 1, t0 + Duration::from_secs(12)).is_empty(), "lease runs to 18 s now");
        assert_eq!(take(&mut q, 1, t0 + Duration::from_secs(19)).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ordering_key_blocks_until_dead_lettered_and_keeps_order() {
        let mut q = Queue::new(cfg(), true, false);
        let t0 = Instant::now();
        q.push([msg("k1", Some("k")), msg("o1", Some("other")), msg("k2", Some("k")), msg("k3", Some("k"))], t0);
        let got = take(&mut q, 10, t0);
        let ids: Vec<_> = got.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, vec!["k1", "o1"], "k2 waits behind k1");
        q.nack(&[(got[0].ack_id.clone(), Duration::from_secs(1))], t0);
        assert!(take(&mut q, 10, t0).is_empty(), "a nacked head still blocks its key");
        let again = take(&mut q, 10, t0 + Duration::from_secs(1));
        assert_eq!(again.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), vec!["k1"]);
        let req = DeadLetterRequest::new(again[0].clone(), "bad");
        q.dead_letter(vec![req]);
        let next = take(&mut q, 10, t0 + Duration::from_secs(1));
        assert_eq!(
            next.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            vec!["k2"],
            "dead-lettering unblocks the key"
        );
        assert_eq!(q.read_letters(None, 10).0[0].letter.attempts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_once_drops_known_ids_until_retention_passes() {
        let mut q = Queue::new(cfg(), false, true);
        let t0 = Instant::now();
        q.push([msg("a", None), msg("a", None)], t0);
        assert_eq!(q.backlog(), 1);
        let got = take(&mut q, 10, t0);
        q.ack(&[got[0].ack_id.clone()]);
        q.push([msg("a", None)], t0 + Duration::from_secs(30));
        assert_eq!(q.backlog(), 0, "acked id republished within retention: dropped");
        q.push([msg("a", None)], t0 + Duration::from_secs(100));
        assert_eq!(q.backlog(), 1, "outside the de-duplication window it is a new message");
    }
}
