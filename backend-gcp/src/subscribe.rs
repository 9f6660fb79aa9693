//! Receiving through one streaming pull per running subscription (flow control from max concurrency, plus room for
//! delayed messages held until due: [`HELD_WINDOW`]; the crate extends leases while we hold a message, for up to 32
//! days). Closing shuts the stream down: pending acks are flushed and every message
//! still leased to this process (prefetched, held past a shutdown timeout) is nacked, so another consumer gets it at
//! once; a restart in the same process reopens the stream and keeps the de-duplication memory. On top, client-side:
//! the ack deadline (a message handed out and neither settled nor extended within it is nacked, so it is
//! redelivered), de-duplication of republished ids on exactly-once topics, late redeliveries of settled messages on
//! ordered topics, and redrive copies addressed to one subscription.
//!
//! Ordering: with message ordering the service hands out a key's messages in order, but streams its later ones
//! before the earlier one is acked, and on a nack or an expired lease it sends the message's successors again. So the
//! backend declares no native ordering: messages go to the runtime in the order they arrive, and core's sequencer
//! keeps one message per key out (a redelivery of a message it holds takes the older delivery's place there).
//!
//! Waiting is event-driven: a receive sleeps until a message arrives or its wait ends; a reaper task per subscription
//! sleeps until the earliest client-side lease deadline. The dead-letter queue is read and redriven on demand through
//! [`crate::dlq`] (unary pulls over REST that release what they do not move), the operator's path too.
//!
//! Nack with delay: the crate's `nack()` redelivers at once and it has no "modify ack deadline to N seconds", so the
//! backend declares `nack_delay = false` and the runtime holds the message (lease kept alive) for the exact backoff,
//! then nacks. No retry policy is set on the subscription, so the service adds no second delay on top.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message as GMessage;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{ShutdownBehavior, ShutdownToken};
use tidings_core::backend::dedup::SeenIds;
use tidings_core::backend::{
    AckId, DeadLetterRequest, DeadLetters, OutgoingMessage, ReceivedMessage, SubscriptionDriver,
};
use tidings_core::{Error, MessageId, Result};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::dlq::GcpDeadLetters;
use crate::meta::{micros, trace_of, Meta};
use crate::provision::Paths;
use crate::publish::to_message;
use crate::received::{id_of, meta_of, publish_time, user_attributes};
use crate::Shared;

/// How long acked ids of an exactly-once topic are remembered to drop republished copies.
const DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// At least this long (and two ack deadlines), an ordered subscription remembers settled ids to drop late redeliveries.
const ORDERED_WINDOW: Duration = Duration::from_secs(60);

struct Held {
    handler: Handler,
    deadline: Instant,
    id: String,
}

struct State {
    next_token: u64,
    held: HashMap<u64, Held>,
    ready: VecDeque<(GMessage, Handler)>,
    /// Exactly-once topics: ids acked in the last [`DEDUP_WINDOW`], to drop republished copies.
    acked: SeenIds<String>,
    /// Ordered topics: ids acked or dead-lettered lately, to drop late redeliveries.
    settled: SeenIds<String>,
}

/// One subscription's stream and its client-side bookkeeping.
pub struct GcpSubscription {
    paths: Paths,
    name: String,
    ordered: bool,
    exactly_once: bool,
    ack_deadline: Duration,
    shared: Arc<Shared>,
    /// Shuts the running stream down; `None` once closed.
    stream: Mutex<Option<ShutdownToken>>,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<(GMessage, Handler)>>,
    state: Mutex<State>,
    /// Wakes the lease reaper: the first lease was taken while none was held (or the driver is going away).
    reaper: Arc<Notify>,
    /// One dead-letter read or redrive at a time (two would split the dead letters between their pulls).
    dlq: Arc<tokio::sync::Mutex<()>>,
    topic_publisher: Publisher,
    dlq_publisher: Publisher,
}

impl std::fmt::Debug for GcpSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpSubscription").field("subscription", &self.paths.subscription).finish_non_exhaustive()
    }
}

/// Starts the streaming pull. `lease` is the stream's ack deadline: how long the service waits for a lease extension
/// before it hands a message to another consumer, so a crashed process's messages come back after the subscription's
/// ack deadline (the service's floor is 10 s) rather than after a fixed minute.
fn pump(
    s: &Shared,
    path: &str,
    outstanding: i64,
    lease: Duration,
    tx: mpsc::UnboundedSender<(GMessage, Handler)>,
) -> ShutdownToken {
    s.calls.count("pubsub:StreamingPull");
    let mut stream = s
        .subscriber
        .subscribe(path)
        .set_max_outstanding_messages(outstanding)
        .set_max_lease(MAX_LEASE)
        .set_max_lease_extension(lease)
        .set_shutdown_behavior(ShutdownBehavior::NackImmediately)
        .build();
    let token = stream.shutdown_token();
    let path = path.to_string();
    tokio::spawn(async move {
        loop {
            match stream.next().await {
                Some(Ok(pair)) => {
                    if tx.send(pair).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(subscription = %path, error = %e, "gcp: streaming pull error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => {
                    tracing::debug!(subscription = %path, "gcp: streaming pull ended");
                    return;
                }
            }
        }
    });
    token
}

/// Room in a stream's flow-control window for delayed messages the runtime holds until their due time: the service
/// counts a held message as outstanding (the crate cannot hand it back with a delay: it has no modify-ack-deadline),
/// so without this room as many held messages as the handlers' share would stop the stream, and due messages would
/// wait behind them. The cost: from a backlog of due messages a process may prefetch this many more (each leased to
/// it, its lease extended by the crate, within the crate's 100 MiB of outstanding bytes); held messages beyond it
/// still make due ones wait on the real service (the emulator enforces no flow control).
pub(crate) const HELD_WINDOW: i64 = 10_000;

/// How long the crate keeps extending a lease: past the longest a delivery is held until its due time (the
/// service's retention ceiling, 31 days), where its default (an hour after receipt) would let the service hand out
/// again a message held longer. The runtime ends its leases itself: it settles what it holds, and the client-side
/// ack deadline nacks a delivery nobody extends.
const MAX_LEASE: Duration = Duration::from_secs(32 * 24 * 3600);

/// The stream's flow-control window: what the handlers hold at once (a batch handler's batches count by their
/// messages), twice, plus the room for held delayed messages.
pub(crate) fn outstanding(spec: &tidings_core::backend::SubscriptionSpec) -> i64 {
    (spec.max_in_flight() as i64).saturating_mul(2).clamp(10, 10_000) + HELD_WINDOW
}

impl GcpSubscription {
    pub(crate) fn start(
        s: Arc<Shared>,
        paths: Paths,
        name: String,
        spec: &tidings_core::backend::SubscriptionSpec,
        topic_publisher: Publisher,
        dlq_publisher: Publisher,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let token = pump(&s, &paths.subscription, outstanding(spec), spec.config.ack_deadline, tx);
        Self {
            paths,
            name,
            ordered: spec.topic.config.ordered,
            exactly_once: spec.topic.config.is_exactly_once(),
            ack_deadline: spec.config.ack_deadline,
            shared: s,
            stream: Mutex::new(Some(token)),
            inbox: tokio::sync::Mutex::new(rx),
            state: Mutex::new(State {
                next_token: 0,
                held: HashMap::new(),
                ready: VecDeque::new(),
                acked: SeenIds::new(DEDUP_WINDOW),
                settled: SeenIds::new((spec.config.ack_deadline * 2).max(ORDERED_WINDOW)),
            }),
            reaper: Arc::new(Notify::new()),
            dlq: Arc::default(),
            topic_publisher,
            dlq_publisher,
        }
    }

    /// Reopens the stream of a closed subscription (a restart in the same process); a running one is left alone.
    pub(crate) async fn reopen(&self, spec: &tidings_core::backend::SubscriptionSpec) {
        let mut inbox = self.inbox.lock().await;
        let mut stream = self.stream.lock().unwrap();
        if stream.is_none() {
            let (tx, rx) = mpsc::unbounded_channel();
            *stream =
                Some(pump(&self.shared, &self.paths.subscription, outstanding(spec), spec.config.ack_deadline, tx));
            *inbox = rx;
        }
    }

    /// Starts the task that nacks deliveries whose client-side lease ran out (the consumer vanished or stalled
    /// without extending). It sleeps until the earliest deadline, or until a lease is taken while none is held; it
    /// ends with the driver.
    pub(crate) fn spawn_reaper(sub: &Arc<Self>) {
        let (weak, changed) = (Arc::downgrade(sub), sub.reaper.clone());
        tokio::spawn(async move {
            loop {
                let Some(next) = weak.upgrade().map(|s| s.next_deadline()) else { return };
                match next {
                    Some(at) => tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = changed.notified() => {}
                    },
                    None => changed.notified().await,
                }
                let Some(sub) = weak.upgrade() else { return };
                sub.expire();
            }
        });
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.state.lock().unwrap().held.values().map(|h| h.deadline).min()
    }

    /// Nacks deliveries whose client-side lease ran out.
    fn expire(&self) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        let expired: Vec<u64> = st.held.iter().filter(|(_, h)| h.deadline <= now).map(|(t, _)| *t).collect();
        for t in expired {
            let h = st.held.remove(&t).unwrap();
            tracing::debug!(id = %h.id, "gcp: ack deadline expired; nacking for redelivery");
            h.handler.nack();
        }
    }

    /// Queues an arrival, or drops it (redrive copies for another subscription, republished ids, late redeliveries of
    /// settled messages).
    fn arrive(&self, st: &mut State, m: GMessage, h: Handler) {
        let meta = meta_of(&m);
        if meta.as_ref().and_then(|x| x.target.as_deref()).is_some_and(|t| t != self.name) {
            h.ack();
            return;
        }
        let id = id_of(&m, meta.as_ref());
        if self.exactly_once && Self::known(st, &id) {
            // A republished id (another Pub/Sub message with the same tidings id): the original is acked, held or
            // queued, and is redelivered itself if its handler fails, so this copy can go.
            h.ack();
            return;
        }
        let redriven = meta.as_ref().is_some_and(|x| x.target.is_some());
        if self.ordered && !m.ordering_key.is_empty() && !redriven && st.settled.contains(&id) {
            // A message of this key that was already acked or dead-lettered, delivered again: on an ordered
            // subscription Pub/Sub redelivers a message's successors with it (after a nack, an expired lease, or the
            // emulator's redelivery of a leased message), so this copy comes after later messages of its key. Handled
            // again it would break the key's order; it was settled, so it goes.
            tracing::debug!(id = %id, key = %m.ordering_key, "gcp: late redelivery of a settled message dropped");
            h.ack();
            return;
        }
        st.ready.push_back((m, h));
    }

    fn known(st: &State, id: &str) -> bool {
        st.acked.contains(id)
            || st.held.values().any(|h| h.id == id)
            || st.ready.iter().any(|(m, _)| id_of(m, meta_of(m).as_ref()) == id)
    }

    fn take(&self, max: usize) -> Vec<ReceivedMessage> {
        let mut st = self.state.lock().unwrap();
        let mut out = Vec::new();
        while out.len() < max {
            let Some((m, h)) = st.ready.pop_front() else { break };
            let meta = meta_of(&m);
            let id = id_of(&m, meta.as_ref());
            let key = (self.ordered && !m.ordering_key.is_empty()).then(|| m.ordering_key.clone());
            let token = st.next_token;
            st.next_token += 1;
            let attempt = h.delivery_attempt().unwrap_or(1).max(1) as u32;
            let published = publish_time(&m, meta.as_ref());
            out.push(
                ReceivedMessage::new(
                    AckId::Num(token),
                    MessageId::from(id.clone()),
                    m.data.clone(),
                    published,
                    attempt,
                )
                .with_attributes(user_attributes(&m))
                .with_ordering_key(key.as_deref().map(Into::into))
                .with_trace(trace_of(&m.attributes, meta.as_ref())),
            );
            if st.held.is_empty() {
                self.reaper.notify_one();
            }
            st.held.insert(token, Held { handler: h, deadline: Instant::now() + self.ack_deadline, id });
        }
        out
    }

    fn release(&self, id: &AckId) -> Option<Held> {
        let AckId::Num(t) = id else { return None };
        self.state.lock().unwrap().held.remove(t)
    }

    /// Ends a delivery for good; records the id for exactly-once de-duplication when `acked` (not for dead letters,
    /// which may be redriven under the same id), and on ordered subscriptions either way (redrive copies are told
    /// apart by their target).
    async fn settle_done(&self, h: Held, acked: bool) -> Result<()> {
        {
            let mut st = self.state.lock().unwrap();
            let now = Instant::now();
            if self.exactly_once && acked {
                st.acked.insert(h.id.clone(), now);
            }
            if self.ordered {
                st.settled.insert(h.id.clone(), now);
            }
        }
        match h.handler {
            Handler::ExactlyOnce(x) => x
                .confirmed_ack()
                .await
                .map_err(|e| Error::backend(format!("gcp: confirmed ack of {} failed: {e}", h.id), true)),
            other => {
                other.ack();
                Ok(())
            }
        }
    }

    async fn publish_copy(&self, publisher: &Publisher, m: &ReceivedMessage, meta: Meta) -> Result<()> {
        let out = OutgoingMessage::new(
            m.id.clone(),
            m.payload.clone(),
            m.attributes.clone(),
            m.ordering_key.clone(),
            m.publish_time,
        );
        self.shared.calls.count_bytes("pubsub:Publish", m.payload.len());
        publisher
            .publish(to_message(&out, meta, self.ordered, self.shared.config.google_trace_attributes))
            .await
            .map(|_| ())
            .map_err(|e| Error::backend(format!("gcp: publishing a copy of {} failed: {e}", m.id), true))
    }
}

impl GcpSubscription {
    /// The dead-letter queue, for one pass (one at a time per subscription); redrive copies go through the topic's
    /// publisher.
    fn dead_letter_queue(&self) -> GcpDeadLetters {
        let (publisher, one) = (Some(self.topic_publisher.clone()), Some(self.dlq.clone()));
        GcpDeadLetters::new(self.shared.clone(), &self.paths, &self.name, self.ordered, publisher, one)
    }
}

impl Drop for GcpSubscription {
    fn drop(&mut self) {
        self.reaper.notify_one(); // the reaper wakes, finds the driver gone and ends
    }
}

#[async_trait]
impl SubscriptionDriver for GcpSubscription {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let give_up = Instant::now() + wait;
        let mut inbox = self.inbox.lock().await;
        let mut open = true;
        loop {
            {
                let mut st = self.state.lock().unwrap();
                while let Ok((m, h)) = inbox.try_recv() {
                    self.arrive(&mut st, m, h);
                }
            }
            let out = self.take(max);
            if !out.is_empty() || Instant::now() >= give_up {
                return Ok(out);
            }
            // Wake for an arrival, or when the wait is over.
            tokio::select! {
                m = inbox.recv(), if open => match m {
                    Some((m, h)) => {
                        let mut st = self.state.lock().unwrap();
                        self.arrive(&mut st, m, h);
                    }
                    None => open = false,
                },
                _ = tokio::time::sleep_until(give_up) => {}
            }
        }
    }

    async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
        self.shared.calls.count("pubsub:Acknowledge");
        let mut first_error = None;
        for id in &ids {
            if let Some(h) = self.release(id) {
                if let Err(e) = self.settle_done(h, true).await {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()> {
        self.shared.calls.count("pubsub:ModifyAckDeadline");
        for (id, _) in &items {
            if let Some(h) = self.release(id) {
                h.handler.nack();
            }
        }
        Ok(())
    }

    async fn extend_lease(&self, ids: Vec<AckId>, by: Duration) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        for id in &ids {
            if let AckId::Num(t) = id {
                if let Some(h) = st.held.get_mut(t) {
                    h.deadline = Instant::now() + by;
                }
            }
        }
        Ok(())
    }

    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()> {
        for r in items {
            let m = &r.message;
            let meta = Meta {
                id: m.id.to_string(),
                ts: micros(m.publish_time),
                reason: Some(r.reason.clone()),
                attempts: Some(m.attempt),
                dlq_ts: Some(micros(std::time::SystemTime::now())),
                trace: m.trace.clone(),
                ..Default::default()
            };
            self.publish_copy(&self.dlq_publisher, m, meta).await?;
            if let Some(h) = self.release(&m.ack_id) {
                self.settle_done(h, false).await?;
            }
        }
        Ok(())
    }

    /// Delayed delivery at its due time: each copy is published to the topic addressed to this subscription (the
    /// others ack and drop it), as a dead-letter restore publishes its copies; then the delivery is settled as a dead
    /// letter is, without remembering its id as acked, so the exactly-once memory does not drop the copy.
    async fn requeue(&self, messages: Vec<ReceivedMessage>) -> Result<()> {
        for m in &messages {
            let meta = Meta {
                id: m.id.to_string(),
                ts: micros(m.publish_time),
                key: m.ordering_key.as_deref().map(str::to_string),
                target: Some(self.name.clone()),
                trace: m.trace.clone(),
                ..Default::default()
            };
            // Out of the held set first: on exactly-once topics a copy arriving while its original is held would be
            // taken for a republish and dropped.
            let Some(h) = self.release(&m.ack_id) else { continue };
            if let Err(e) = self.publish_copy(&self.topic_publisher, m, meta).await {
                h.handler.nack(); // back at once, to be requeued again
                return Err(e);
            }
            self.settle_done(h, false).await?;
        }
        Ok(())
    }

    fn dead_letter_queue(self: Arc<Self>) -> Option<Arc<dyn DeadLetters>> {
        Some(Arc::new(GcpSubscription::dead_letter_queue(&self)))
    }

    async fn close(&self) -> Result<()> {
        // The runtime has settled what it could. Shutting the stream down flushes those acks and nacks everything
        // else leased to us (prefetched, or held by a handler that outran the shutdown timeout), so it is
        // redelivered to another consumer now rather than after the lease runs out.
        let token = self.stream.lock().unwrap().take();
        if let Some(token) = token {
            token.shutdown().await;
        }
        let mut inbox = self.inbox.lock().await;
        while inbox.try_recv().is_ok() {}
        let mut st = self.state.lock().unwrap();
        st.held.clear();
        st.ready.clear();
        Ok(())
    }
}
