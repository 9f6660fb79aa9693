//! Batch handlers ([`crate::Bus::subscribe_batch`]): gathering batches, running them, settling each message on its
//! own.
//!
//! Gathering ([`gather`]): one batch is gathered at a time, from as many receives as it takes (each asks for the
//! room left in the batch, at most `max_receive_batch`), from the messages the sequencer releases, and from what the
//! rest of the runtime hands over ([`to_next_batch`]: a key's next message once its batch is done, a held delivery
//! now due). The batch goes to the handler once it holds `max_messages`, or `max_wait` after its first message
//! arrived, on a free handler slot: `max_concurrency` counts batches. New receives start only while the batch being
//! gathered has its slot; a receive still in flight when its batch leaves fills the next one. While a batch waits
//! (for more messages, or for a slot) its leases are extended every third of the ack deadline, as a running
//! handler's are.
//!
//! Running ([`run_batch`]): each message is decoded (a poison one is dead-lettered, never handed over) and gets its own
//! `process` span and attempt, children of the batch's span; the handler gets the others in one call, under panic
//! isolation, with every lease of the batch extended while it runs; then each message is settled on its own through
//! [`conclude`], the single handler's path: the same ack, backoff, attempt count and dead-letter decision.
//!
//! Ordered topics: a key's messages in a batch are in publish order, and the key is in no other running batch (the
//! broker's native ordering hands out a key's next message only once the previous ones were settled; elsewhere the
//! sequencer keeps one message per key out). A key's message that is retried takes its key's later messages in the
//! batch back with it, with the same delay, whatever their own outcome, so they are handled again after it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Span;

use super::deliver::{decode, done, with_lease, Begin, Done, Failure, InSpan};
use super::receive::{by_key, empty_permit, log_task_end, sort, RECEIVE_WAIT};
use super::settle::{ack_now, conclude, nack, retry_behind, settle_like, settled_ack, Outcome};
use super::{Attempt, Ctx, Handling};
use crate::backend::{AckId, ReceivedMessage};
use crate::handler::{BatchOutcome, BatchResult};

/// The way into the batch being gathered: deliveries, with when their lease last began.
pub(super) type Gathered = mpsc::UnboundedReceiver<(ReceivedMessage, Instant)>;

/// A delivery in the batch being gathered.
struct Pending {
    msg: ReceivedMessage,
    /// When it joined the batch.
    arrived: Instant,
    /// When its lease last began.
    leased_at: Instant,
}

/// Hands a delivery over to the batch being gathered; once the subscription has stopped gathering, it goes back to
/// the broker at once.
pub(super) fn to_next_batch<T>(ctx: &Ctx<T>, msg: ReceivedMessage, leased_at: Instant) {
    let Handling::Batch { gather, .. } = &ctx.handler else { unreachable!("only batch subscriptions gather") };
    if let Err(mpsc::error::SendError((msg, _))) = gather.send((msg, leased_at)) {
        nack(ctx, msg.ack_id, Duration::ZERO);
    }
}

/// Gathers batches and starts a task per batch in `tasks`, until the subscription stops; then what was gathered goes
/// back at once.
pub(super) async fn gather<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: &Arc<Ctx<T>>,
    gathered: &mut Gathered,
    tasks: &mut JoinSet<()>,
) {
    let config = ctx.runner.spec.config;
    let (max, max_wait) = (config.max_messages.max(1), config.max_wait);
    let period = (config.ack_deadline / 3).max(Duration::from_millis(1));
    let per_receive = ctx.caps.max_receive_batch.max(1);
    // Ordered topics keep one receive at a time: the broker's hand-out order is the delivery order.
    let max_receives = if ctx.runner.spec.topic.config.ordered { 1 } else { ctx.caps.concurrent_receives.max(1) };
    let (sem, cancel) = (ctx.slots.clone(), ctx.runner.cancel.clone());
    // The handler slot of the batch being gathered, once it has one.
    let mut slot: Option<OwnedSemaphorePermit> = None;
    let mut open: Vec<Pending> = Vec::new();
    let mut receiving = FuturesUnordered::new();
    // Messages the receives in flight asked for: the room they hold in the batch.
    let mut requested = 0;
    // Receives wanted in flight: one more after each full one (up to the capability), back to one after a partial.
    let mut wanted = 1;
    let mut error_backoff = Duration::from_millis(100);
    // After a failed receive, no new one before this.
    let mut paused_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if slot.is_some() && !open.is_empty() && (open.len() >= max || now >= open[0].arrived + max_wait) {
            let batch: Vec<Pending> = open.drain(..open.len().min(max)).collect();
            let slot = slot.take().expect("checked above");
            tasks.spawn(run_batch(ctx.clone(), batch, slot));
            while let Some(r) = tasks.try_join_next() {
                log_task_end(r);
            }
            continue;
        }
        if slot.is_some() {
            // Messages the sequencer released (their key's retried message was given up) go before a receive.
            let room = max.saturating_sub(open.len() + requested);
            if let (Some(q), true) = (&ctx.seq, room > 0) {
                let (ready, since) = q.take_ready(room);
                let leased_at = since.unwrap_or(now);
                open.extend(ready.into_iter().map(|msg| Pending { msg, arrived: now, leased_at }));
            }
            if paused_until.is_some_and(|t| now >= t) {
                paused_until = None;
            }
            if paused_until.is_none() && ctx.seq.as_ref().is_some_and(|q| q.saturated()) {
                // As many wait behind their keys as the sequencer parks: no receive until some are let out.
                paused_until = Some(now + super::receive::SATURATED_POLL);
            }
            while paused_until.is_none() && receiving.len() < wanted {
                let room = max.saturating_sub(open.len() + requested);
                if room == 0 {
                    break;
                }
                let n = room.min(per_receive);
                requested += n;
                let (driver, metrics) = (ctx.runner.driver.clone(), ctx.runner.metrics.clone());
                receiving.push(async move {
                    let started = metrics.start();
                    let received = driver.receive(n, RECEIVE_WAIT).await;
                    metrics.received(started);
                    (received, n)
                });
            }
        }
        let far = now + Duration::from_secs(3600);
        let due = match (&slot, open.first()) {
            (Some(_), Some(first)) => first.arrived + max_wait,
            _ => far,
        };
        let extend_at = open.iter().map(|p| p.leased_at).min().map_or(far, |t| t + period);
        let resume = paused_until.unwrap_or(far);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            // Before the receives, so a stream of deliveries cannot hold a due extension back.
            _ = tokio::time::sleep_until(extend_at), if extend_at < far => extend_waiting(ctx, &mut open),
            p = sem.clone().acquire_owned(), if slot.is_none() => slot = Some(p.expect("semaphore is never closed")),
            Some((received, n)) = receiving.next(), if !receiving.is_empty() => {
                requested -= n;
                match received {
                    Ok(batch) => {
                        error_backoff = Duration::from_millis(100);
                        wanted = if batch.len() == n { (wanted + 1).min(max_receives) } else { 1 };
                        if !batch.is_empty() {
                            let now = Instant::now();
                            ctx.runner.activity.received(batch.len());
                            let batch = sort(ctx, super::delay::screen(ctx, batch), now);
                            open.extend(batch.into_iter().map(|msg| Pending { msg, arrived: now, leased_at: now }));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %ctx.runner.key.1, error = %e, retry_in = ?error_backoff,
                            "receive failed");
                        wanted = 1;
                        if receiving.is_empty() {
                            paused_until = Some(Instant::now() + crate::backend::time::jittered(error_backoff));
                            error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
            Some((msg, leased_at)) = gathered.recv() => open.push(Pending { msg, arrived: Instant::now(), leased_at }),
            _ = tokio::time::sleep_until(due), if due < far => {}
            _ = tokio::time::sleep_until(resume), if resume < far => {}
        }
    }
    drop(receiving);
    // Shutdown: what no handler got goes back at once, rather than waiting out its lease.
    for p in open {
        nack(ctx, p.msg.ack_id, Duration::ZERO);
    }
}

/// Extends the leases of the batch being gathered, in the background (gathering goes on meanwhile).
fn extend_waiting<T>(ctx: &Ctx<T>, open: &mut [Pending]) {
    let now = Instant::now();
    let ids: Vec<AckId> = open
        .iter_mut()
        .map(|p| {
            p.leased_at = now;
            p.msg.ack_id.clone()
        })
        .collect();
    let runner = ctx.runner.clone();
    let by = runner.spec.config.ack_deadline;
    tracing::debug!(target: "tidings", subscription = %runner.key.1, waiting = ids.len(), tidings.settle = "extend_lease",
        "extending the leases of a batch being gathered");
    tokio::spawn(async move {
        if let Err(e) = runner.extend(ids, by).await {
            tracing::warn!(subscription = %runner.key.1, error = %e, "lease extension of a batch being gathered failed");
        }
    });
}

/// A delivery of a batch with its attempt, and how it ended.
type Item = (ReceivedMessage, Attempt, Done);

/// Runs one batch on its handler slot: decode, one handler call (leases extended), then each message settled.
async fn run_batch<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: Arc<Ctx<T>>,
    batch: Vec<Pending>,
    slot: OwnedSemaphorePermit,
) {
    if ctx.runner.cancel.is_cancelled() {
        // Shutdown began while the batch was gathered: no handler got it, so it goes back at once.
        for p in batch {
            nack(&ctx, p.msg.ack_id, Duration::ZERO);
        }
        return;
    }
    let Handling::Batch { handler, .. } = &ctx.handler else { unreachable!("only batch subscriptions run batches") };
    let leased_at = batch.iter().map(|p| p.leased_at).min().unwrap_or_else(Instant::now);
    let span = ctx.batch_span(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    let mut messages = Vec::with_capacity(batch.len());
    for Pending { msg, .. } in batch {
        let a = Attempt {
            span: span.in_scope(|| ctx.process_span(&msg)),
            started: ctx.runner.metrics.handler_started(msg.publish_time),
        };
        let poison = match decode(&ctx, &msg, &a.span) {
            Ok(m) => {
                messages.push(m);
                None
            }
            Err(f) => Some(Done::Failed(f)),
        };
        items.push((msg, a, poison));
    }
    let handled = messages.len();
    let mut dones = match handled {
        0 => Vec::new(),
        _ => {
            let ids: Vec<AckId> = items.iter().map(|(m, _, _)| m.ack_id.clone()).collect();
            let called = span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(messages))));
            let result = match called {
                Ok(fut) => {
                    let running = AssertUnwindSafe(InSpan { span: span.clone(), fut }).catch_unwind();
                    with_lease(&ctx, &ids, &span, leased_at, running).await
                }
                Err(panic) => Err(panic),
            };
            outcomes(result, handled, &span)
        }
    }
    .into_iter();
    // The handler is done with the batch: its slot goes to the next one while these are settled.
    drop(slot);
    let items: Vec<Item> = items
        .into_iter()
        .map(|(m, a, poison)| {
            let d = poison.unwrap_or_else(|| dones.next().expect("one outcome per message handed over"));
            (m, a, d)
        })
        .collect();
    settle_all(&ctx, items, leased_at).await;
}

/// How each of the `n` messages the handler got ended, in batch order. A failure of the whole call (an error, a
/// panic, or a wrong number of outcomes) fails every message with it, and is recorded on the batch's span.
fn outcomes(result: std::thread::Result<BatchResult>, n: usize, span: &Span) -> Vec<Done> {
    let all = |f: Failure| {
        span.record("error.type", f.class().as_str());
        (0..n).map(|_| Done::Failed(f.clone())).collect()
    };
    let failed = |d: Done| match d {
        Done::Failed(f) => all(f),
        Done::Ok => unreachable!("only failures fail a whole batch"),
    };
    match result {
        Ok(Ok(BatchOutcome::AckAll)) => (0..n).map(|_| Done::Ok).collect(),
        Ok(Ok(BatchOutcome::Each(results))) if results.len() == n => results.into_iter().map(|r| done(Ok(r))).collect(),
        Ok(Ok(BatchOutcome::Each(results))) => all(Failure::Handler(format!(
            "batch handler returned {} outcomes for a batch of {n} messages (BatchOutcome::Each needs one per message, \
             in order); every message of the batch is retried",
            results.len()
        ))),
        Ok(Err(e)) => failed(done(Ok(Err(e)))),
        Err(panic) => failed(done(Err(panic))),
    }
}

/// Settles each message of a finished batch on its own: concurrently, except a key's messages on an ordered topic
/// with native ordering, which are settled in order ([`settle_chain`]). On an unordered topic the acks go to the
/// driver at once, in one call, as a single handler's fast path does; the failures go through [`conclude`].
async fn settle_all<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: &Arc<Ctx<T>>,
    items: Vec<Item>,
    leased_at: Instant,
) {
    let mut settling: FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>> = FuturesUnordered::new();
    let mut acks = Vec::new();
    if !ctx.runner.spec.topic.config.ordered {
        for (m, a, d) in items {
            match d {
                Done::Ok => {
                    settled_ack(ctx, &a);
                    acks.push(m.ack_id);
                }
                d => settling.push(Box::pin(settle_one(ctx.clone(), m, a, d, leased_at))),
            }
        }
    } else if ctx.seq.is_some() {
        for (m, a, d) in items {
            settling.push(Box::pin(settle_one(ctx.clone(), m, a, d, leased_at)));
        }
    } else {
        for chain in by_key(items, |(m, _, _)| m.ordering_key.as_ref()) {
            settling.push(Box::pin(settle_chain(ctx.clone(), chain, leased_at)));
        }
    }
    let ack = async {
        if !acks.is_empty() {
            ack_now(ctx, acks).await;
        }
    };
    futures_util::future::join(ack, async { while settling.next().await.is_some() {} }).await;
}

/// Settles one message; on a sequenced subscription, its key's next message (now out) goes to the next batch.
async fn settle_one<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: Arc<Ctx<T>>,
    msg: ReceivedMessage,
    a: Attempt,
    d: Done,
    leased_at: Instant,
) {
    let keyed = ctx.seq.as_ref().and_then(|q| msg.ordering_key.clone().map(|k| (q.clone(), k, msg.id.clone())));
    let none = empty_permit(&ctx.slots);
    let outcome = conclude(ctx.clone(), msg, none, Begin::Done(d), a, leased_at).await;
    let Some((seq, key, id)) = keyed else { return };
    let finished = seq.finished(&key, &id, outcome, Instant::now());
    if let Some(again) = finished.again {
        settle_like(&ctx, again, outcome);
    }
    if let Some((next, since)) = finished.next {
        to_next_batch(&ctx, next, since);
    }
}

/// Settles a key's messages of a batch in order; once one is retried, the rest go back with the same delay.
async fn settle_chain<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: Arc<Ctx<T>>,
    chain: Vec<Item>,
    leased_at: Instant,
) {
    let mut chain = chain.into_iter();
    while let Some((msg, a, d)) = chain.next() {
        let none = empty_permit(&ctx.slots);
        if let Outcome::Retried(delay) = conclude(ctx.clone(), msg, none, Begin::Done(d), a, leased_at).await {
            for (rest, a, _) in chain.by_ref() {
                retry_behind(&ctx, &a, rest, delay);
            }
        }
    }
}
