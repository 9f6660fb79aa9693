//! A subscription's dead-letter queue (the subscription `<sub>-dlq` on the topic `<sub>-dlq`) as the one dead-letter
//! surface, [`DeadLetters`]: the operator (`Admin::dead_letter_queue`: `tidings::admin::Operator`, the CLI, the
//! dashboard) and a running subscription's `Subscription::dead_letters` / `redrive` both sweep it with core's one
//! loop (select, pace, move).
//!
//! A read is a unary pull over REST ([`crate::rest`]): it leases exactly what it returns, for the dead-letter
//! subscription's ack deadline, and the queue extends those leases while it holds them, so one pass sees each letter
//! once; the handle is the ack id. What a pass does not move is released (ack deadline 0) at its end, or when the
//! queue is dropped, so the next read, a redrive or another process sees every dead letter at once. A streaming pull
//! per read did not: on Google's stock emulator every closed stream stays behind as a ghost consumer that takes later
//! dead letters and keeps them leased for its ack deadline (and then hands them to the next ghost), so reads came
//! back short and a redrive right after a read found nothing.
//!
//! A queue hands out each message id once: a later copy of an id it handed out (a dead letter redriven and
//! dead-lettered again during the pass) is held back and released with the rest, for the next pass.
//!
//! A restore publishes a copy to the topic (addressed to this subscription; the topic's other subscriptions ack and
//! skip it) and then acks the dead letter: an interruption leaves each message in the dead-letter subscription, back
//! in the subscription, or in both, never in neither.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::client::Publisher;
use tidings_core::backend::{AckId, DeadLetters, HeldLetter, LetterPage, OutgoingMessage};
use tidings_core::{DeadLetter, Error, MessageId, Result};
use tokio::sync::OwnedMutexGuard;

use crate::meta::{micros, trace_of, Meta};
use crate::provision::Paths;
use crate::publish::to_message;
use crate::received::{dead_letter_of, meta_of};
use crate::Shared;

/// Empty pull answers in a row before a dead-letter subscription counts as drained (the API may answer empty although
/// messages exist; the emulator does not).
const PATIENCE: usize = 2;
/// Most dead letters a count (and a read of the driver's own `dead_letters` and `redrive`) sees.
pub(crate) const MAX_PULL: usize = 10_000;
/// How often the leases of held dead letters are extended, and to how long: well inside Pub/Sub's shortest ack
/// deadline (10 s), so a slow pass (a redrive at a low rate) keeps what it read.
const KEEP_EVERY: Duration = Duration::from_secs(5);
const LEASE_SECS: u32 = 60;

/// One pass over a subscription's dead-letter queue: made per read, redrive or purge, it holds what it pulled until
/// that is acked or released, and releases the rest when it is dropped.
pub(crate) struct GcpDeadLetters {
    q: Arc<Queue>,
    /// The driver's: one pass at a time over a running subscription's dead letters in this process (two would split
    /// them between their pulls). Taken at the first call, given up once what the pass held is released.
    one: Option<Arc<tokio::sync::Mutex<()>>>,
    turn: tokio::sync::Mutex<Option<OwnedMutexGuard<()>>>,
}

struct Queue {
    s: Arc<Shared>,
    /// The dead-letter subscription.
    path: String,
    /// The topic restored copies go to.
    topic: String,
    /// The subscription's name in tidings: restored copies are addressed to it.
    name: String,
    /// Whether the topic is ordered (restored copies keep their ordering key).
    ordered: bool,
    publisher: OnceLock<Publisher>,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// Ack ids leased by this pass's pulls, neither acked nor released yet.
    leased: HashSet<String>,
    /// The message ids handed out.
    handed: HashSet<MessageId>,
    /// Ack ids of later copies of a handed-out id, held back until the release.
    again: Vec<String>,
    /// Ack ids whose redrive copy was accepted.
    copied: HashSet<String>,
    /// Whether the task extending the leases runs.
    keeping: bool,
}

impl std::fmt::Debug for GcpDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpDeadLetters").field("subscription", &self.q.path).finish_non_exhaustive()
    }
}

fn ack_id(handle: &AckId) -> Option<String> {
    match handle {
        AckId::Text(t) => Some(t.to_string()),
        AckId::Num(_) => None,
    }
}

impl GcpDeadLetters {
    /// The dead-letter queue of the subscription `name` at `paths`; restored copies go through `publisher` (made on
    /// the first restore when `None`), and with `one` a pass waits for the one before it.
    pub(crate) fn new(
        s: Arc<Shared>,
        paths: &Paths,
        name: &str,
        ordered: bool,
        publisher: Option<Publisher>,
        one: Option<Arc<tokio::sync::Mutex<()>>>,
    ) -> Self {
        let q = Queue {
            s,
            path: paths.dlq_subscription.clone(),
            topic: paths.topic.clone(),
            name: name.to_string(),
            ordered,
            publisher: publisher.map(OnceLock::from).unwrap_or_default(),
            held: Mutex::default(),
        };
        Self { q: Arc::new(q), one, turn: tokio::sync::Mutex::new(None) }
    }

    async fn take_turn(&self) {
        let Some(one) = &self.one else { return };
        let mut turn = self.turn.lock().await;
        if turn.is_none() {
            *turn = Some(one.clone().lock_owned().await);
        }
    }

    /// How many distinct dead letters there are (up to [`MAX_PULL`]); nothing stays held.
    pub(crate) async fn count(&self) -> Result<u64> {
        Ok(self.peek(MAX_PULL).await?.len() as u64)
    }

    /// Up to `max` dead letters from one read, each once, oldest first; nothing stays held.
    pub(crate) async fn peek(&self, max: usize) -> Result<Vec<DeadLetter>> {
        let page = self.read(None, max).await?;
        let handles = page.letters.iter().map(|h| h.handle.clone()).collect();
        self.release(handles).await?;
        let mut out: Vec<DeadLetter> = page.letters.into_iter().map(|h| h.letter).collect();
        out.sort_by_key(|d| d.dead_lettered_at);
        Ok(out)
    }
}

impl Queue {
    fn publisher(&self) -> &Publisher {
        self.publisher.get_or_init(|| self.s.base.publisher(self.topic.clone()).build())
    }

    /// Extends the leases of what the pass holds every [`KEEP_EVERY`] until the queue is gone.
    fn keep(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(KEEP_EVERY).await;
                let Some(q) = weak.upgrade() else { return };
                let ids: Vec<String> = q.held.lock().unwrap().leased.iter().cloned().collect();
                if let Err(e) = q.modify(&ids, LEASE_SECS).await {
                    tracing::debug!(subscription = %q.path, error = %e, "gcp: extending dead-letter leases failed");
                }
            }
        });
    }

    async fn modify(&self, ids: &[String], seconds: u32) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.s.calls.count("pubsub:ModifyAckDeadline");
        self.s.rest()?.modify_ack_deadline(&self.path, ids, seconds).await
    }

    /// Gives these leases back (and the copies held back), so the next pull sees them now.
    async fn release(&self, mut ids: Vec<String>) -> Result<()> {
        {
            let mut held = self.held.lock().unwrap();
            ids.append(&mut held.again);
            for id in &ids {
                held.leased.remove(id);
            }
        }
        self.modify(&ids, 0).await
    }

    async fn ack(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.s.calls.count("pubsub:Acknowledge");
        self.s.rest()?.acknowledge(&self.path, ids).await?;
        let mut held = self.held.lock().unwrap();
        for id in ids {
            held.leased.remove(id);
        }
        Ok(())
    }

    /// The redrive copy of a dead letter: to the topic, addressed to this subscription, attempts reset.
    fn copy_of(&self, h: &HeldLetter) -> google_cloud_pubsub::model::Message {
        let d = &h.letter;
        let key = d.ordering_key.as_deref().map(Into::into);
        let out = OutgoingMessage::new(d.id.clone(), d.payload.clone(), d.attributes.clone(), key, d.publish_time);
        let meta = Meta {
            id: d.id.to_string(),
            ts: micros(d.publish_time),
            target: Some(self.name.clone()),
            trace: h.trace.clone(),
            ..Default::default()
        };
        to_message(&out, meta, self.ordered, self.s.config.google_trace_attributes)
    }
}

#[async_trait]
impl DeadLetters for GcpDeadLetters {
    /// Pulls up to `max` dead letters not handed out yet. The cursor is not needed: what a read handed out stays
    /// leased, so the next pull goes on with the others; the page goes on while its pulls filled it.
    async fn read(&self, _cursor: Option<&str>, max: usize) -> Result<LetterPage> {
        self.take_turn().await;
        let q = &self.q;
        let mut letters = Vec::new();
        if max == 0 {
            return Ok(LetterPage::default());
        }
        loop {
            q.s.calls.count("pubsub:Pull");
            let pulled = q.s.rest()?.pull(&q.path, max, PATIENCE).await?;
            let drained = pulled.len() < max;
            let mut held = q.held.lock().unwrap();
            if !held.keeping && !pulled.is_empty() {
                held.keeping = true;
                q.keep();
            }
            for r in pulled {
                held.leased.insert(r.ack_id.clone());
                let letter = dead_letter_of(&r.message);
                if !held.handed.insert(letter.id.clone()) {
                    held.again.push(r.ack_id);
                    continue;
                }
                let trace = trace_of(&r.message.attributes, meta_of(&r.message).as_ref());
                letters.push(HeldLetter::new(AckId::Text(r.ack_id.into()), letter).with_trace(trace));
            }
            if drained || !letters.is_empty() {
                let next = (!drained).then(|| "pulling".to_string());
                return Ok(LetterPage::new(letters, next));
            }
        }
    }

    /// Publishes the copies, then acks the dead letters whose copy was accepted. Retried (core retries a step that
    /// failed), it copies nothing twice: letters acked already are left out, and those copied before are only acked.
    async fn restore(&self, letters: Vec<HeldLetter>) -> Result<()> {
        self.take_turn().await;
        let q = &self.q;
        let (mut copied, fresh) = {
            let held = q.held.lock().unwrap();
            let open = letters.into_iter().filter_map(|h| ack_id(&h.handle).map(|a| (a, h)));
            let open: Vec<(String, HeldLetter)> = open.filter(|(a, _)| held.leased.contains(a)).collect();
            let (before, fresh): (Vec<_>, Vec<_>) = open.into_iter().partition(|(a, _)| held.copied.contains(a));
            (before.into_iter().map(|(a, _)| a).collect::<Vec<String>>(), fresh)
        };
        q.s.calls.count_bytes("pubsub:Publish", fresh.iter().map(|(_, h)| h.letter.payload.len()).sum());
        let sent: Vec<_> = fresh.iter().map(|(_, h)| q.publisher().publish(q.copy_of(h))).collect();
        let mut failed = None;
        for ((a, h), sending) in fresh.into_iter().zip(sent) {
            match sending.await {
                Ok(_) => {
                    q.held.lock().unwrap().copied.insert(a.clone());
                    copied.push(a);
                }
                Err(e) => {
                    if let (true, Some(k)) = (q.ordered, h.letter.ordering_key.as_deref()) {
                        q.publisher().resume_publish(k); // the publisher pauses a key after a failure
                    }
                    let id = &h.letter.id;
                    let e = Error::backend(
                        format!("gcp: publishing the redrive copy of {id} to {} failed: {e}", q.topic),
                        true,
                    );
                    failed.get_or_insert(e);
                }
            }
        }
        // Copied and still a dead letter when the ack fails: in both places (at least once), released at the end.
        q.ack(&copied).await?;
        failed.map_or(Ok(()), Err)
    }

    async fn delete(&self, handles: Vec<AckId>) -> Result<()> {
        self.take_turn().await;
        self.q.ack(&handles.iter().filter_map(ack_id).collect::<Vec<_>>()).await
    }

    async fn release(&self, handles: Vec<AckId>) -> Result<()> {
        self.q.release(handles.iter().filter_map(ack_id).collect()).await
    }
}

impl Drop for GcpDeadLetters {
    /// Releases what the pass still holds (copies held back, letters of a pass that was cut short), keeping the turn
    /// until that is done.
    fn drop(&mut self) {
        let turn = self.turn.get_mut().take();
        let left: Vec<String> = {
            let mut held = self.q.held.lock().unwrap();
            held.again.clear();
            held.leased.drain().collect()
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        if left.is_empty() {
            return;
        }
        let q = self.q.clone();
        rt.spawn(async move {
            if let Err(e) = q.release(left).await {
                tracing::debug!(subscription = %q.path, error = %e, "gcp: releasing dead letters failed");
            }
            drop(turn);
        });
    }
}
