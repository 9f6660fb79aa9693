//! Settling deliveries: the decision (ack, retry after the backoff, or dead-letter) and the one route by which every
//! settlement reaches the driver, [`apply`]: from the settle loop, and from a group's fast path (its acks, in one
//! call). Drivers never retry: a settle call (and a lease extension, [`extend`]) that fails retryably is retried here
//! with backoff ([`crate::retry::call`]), so a transient error on an ack does not turn into a redelivery; the retries
//! end at the shutdown's deadline.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::deliver::{done, with_lease, Begin, Done, Failure};
use super::{Attempt, Ctx, Runner};
use crate::backend::{AckId, DeadLetterRequest, ReceivedMessage};
use crate::metrics::Settled;
use crate::retry;

/// Most settlements the settle loop gathers per round; its driver calls take at most `max_settle_batch` each.
const SETTLE_BATCH: usize = 1000;

/// A settlement on its way to the settle loop.
pub(super) enum Settle {
    Ack(AckId),
    Nack(AckId, Duration),
    DeadLetter(DeadLetterRequest),
}

/// How one delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Acked,
    DeadLettered,
    /// Nacked with this delay.
    Retried(Duration),
}

/// Sends a nack with `delay` to the settle loop.
pub(super) fn nack<T>(ctx: &Ctx<T>, id: AckId, delay: Duration) {
    let _ = ctx.settle.send(Settle::Nack(id, delay));
}

/// Records an ack on the delivery's span and in the metrics.
pub(super) fn settled_ack<T>(ctx: &Ctx<T>, a: &Attempt) {
    ctx.runner.metrics.settled(Settled::Ack, a.started);
    tracing::debug!(target: "tidings", parent: &a.span, subscription = %ctx.runner.key.1, tidings.settle = "ack", "acked");
}

/// Acks a group's fast-path deliveries at once, in one driver call, without the settle loop.
pub(super) async fn ack_now<T>(ctx: &Ctx<T>, acks: Vec<AckId>) {
    apply(&ctx.runner, acks, Vec::new(), Vec::new()).await;
}

/// The rest of a delivery: wait for a running handler (extending its lease), then settle: ack, dead-letter, or retry
/// after the backoff.
pub(super) async fn conclude<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: Arc<Ctx<T>>,
    msg: ReceivedMessage,
    permit: OwnedSemaphorePermit,
    begun: Begin,
    a: Attempt,
    received_at: tokio::time::Instant,
) -> Outcome {
    let span = &a.span;
    let attempt = msg.attempt;
    let policy = ctx.runner.spec.config.retry;
    let finished = match begun {
        Begin::Done(d) => d,
        Begin::Running(fut) => done(with_lease(&ctx, std::slice::from_ref(&msg.ack_id), span, received_at, fut).await),
    };
    let failure = match finished {
        Done::Ok => {
            settled_ack(&ctx, &a);
            let _ = ctx.settle.send(Settle::Ack(msg.ack_id));
            return Outcome::Acked;
        }
        Done::Failed(f) => f,
    };
    if failure.is_final() {
        // A poison message's span has its `error.type` already (recorded where decoding failed).
        if let Failure::Unrecoverable(_) = failure {
            span.record("error.type", failure.class().as_str());
        }
        dead_letter(&ctx, &a, msg, failure);
        return Outcome::DeadLettered;
    }
    span.record("error.type", failure.class().as_str());
    if policy.is_exhausted(attempt) {
        dead_letter(&ctx, &a, msg, failure);
        return Outcome::DeadLettered;
    }
    ctx.runner.metrics.settled(Settled::Retry, a.started);
    let delay = policy.backoff(attempt);
    tracing::debug!(target: "tidings", parent: span, subscription = %ctx.runner.key.1, id = %msg.id, attempt,
        tidings.settle = "nack", tidings.retry_in = ?delay, error = %failure, "handler failed; will retry");
    if ctx.caps.nack_delay {
        nack(&ctx, msg.ack_id, delay);
        return Outcome::Retried(delay);
    }
    // The backend cannot delay a nack: hold the message (lease kept alive) for the backoff, without a handler slot.
    drop(permit);
    let cancel = ctx.runner.cancel.clone();
    let _ = with_lease(&ctx, std::slice::from_ref(&msg.ack_id), span, received_at, async {
        tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = cancel.cancelled() => {} }
    })
    .await;
    nack(&ctx, msg.ack_id, Duration::ZERO);
    Outcome::Retried(Duration::ZERO)
}

/// Settles a second delivery of a message as the first one's ended: acked with it (acked or dead-lettered), or nacked
/// with its retry's delay.
pub(super) fn settle_like<T>(ctx: &Ctx<T>, again: ReceivedMessage, outcome: Outcome) {
    match outcome {
        Outcome::Retried(delay) => nack(ctx, again.ack_id, delay),
        Outcome::Acked | Outcome::DeadLettered => {
            let _ = ctx.settle.send(Settle::Ack(again.ack_id));
        }
    }
}

/// A message of an ordered topic that a batch held behind an earlier message of its key, which is retried: it goes
/// back with the same delay whatever its own outcome, so it is handled again after that one.
pub(super) fn retry_behind<T>(ctx: &Ctx<T>, a: &Attempt, msg: ReceivedMessage, delay: Duration) {
    ctx.runner.metrics.settled(Settled::Retry, a.started);
    tracing::debug!(target: "tidings", parent: &a.span, subscription = %ctx.runner.key.1, id = %msg.id,
        attempt = msg.attempt, tidings.settle = "nack", tidings.retry_in = ?delay,
        "an earlier message of its ordering key is retried; this one is retried after it");
    nack(ctx, msg.ack_id, delay);
}

fn dead_letter<T>(ctx: &Ctx<T>, a: &Attempt, message: ReceivedMessage, failure: Failure) {
    ctx.runner.metrics.settled(Settled::DeadLetter(failure.class()), a.started);
    let reason = failure.to_string();
    tracing::warn!(target: "tidings", parent: &a.span, subscription = %ctx.runner.key.1, id = %message.id,
        attempt = message.attempt, tidings.settle = "dead_letter", %reason, "dead-lettering message");
    let _ = ctx.settle.send(Settle::DeadLetter(DeadLetterRequest { message, reason }));
}

pub(super) async fn settle_loop(runner: Arc<Runner>, mut rx: mpsc::UnboundedReceiver<Settle>) {
    let mut buf = Vec::with_capacity(64);
    while rx.recv_many(&mut buf, SETTLE_BATCH).await > 0 {
        let (mut acks, mut nacks, mut dead) = (Vec::with_capacity(buf.len()), Vec::new(), Vec::new());
        for s in buf.drain(..) {
            match s {
                Settle::Ack(id) => acks.push(id),
                Settle::Nack(id, d) => nacks.push((id, d)),
                Settle::DeadLetter(r) => dead.push(r),
            }
        }
        apply(&runner, acks, nacks, dead).await;
    }
}

/// Applies settlements in driver calls of at most [`crate::Capabilities::max_settle_batch`] per kind, each retried
/// while it fails retryably (until the shutdown's deadline), and counts them as settled.
async fn apply(runner: &Runner, acks: Vec<AckId>, nacks: Vec<(AckId, Duration)>, dead: Vec<DeadLetterRequest>) {
    let (driver, stop, batch) = (&runner.driver, Some(&runner.abort), runner.settle_batch);
    let n = acks.len() + nacks.len() + dead.len();
    let started = runner.metrics.start();
    // Dead letters first: an ordering key blocked behind one unblocks with it.
    for chunk in dead.chunks(batch) {
        if let Err(e) = retry::call("dead_letter", stop, || driver.dead_letter(chunk.to_vec())).await {
            tracing::error!(error = %e, "dead-lettering failed; the messages will be redelivered");
        }
    }
    for chunk in acks.chunks(batch) {
        if let Err(e) = retry::call("ack", stop, || driver.ack(chunk.to_vec())).await {
            tracing::warn!(error = %e, "ack failed; the messages may be redelivered");
        }
    }
    for chunk in nacks.chunks(batch) {
        if let Err(e) = retry::call("nack", stop, || driver.nack(chunk.to_vec())).await {
            tracing::warn!(error = %e, "nack failed; the messages return after their ack deadline");
        }
    }
    runner.metrics.settle_call(started);
    runner.activity.settled(n);
}

#[cfg(test)]
mod tests;
