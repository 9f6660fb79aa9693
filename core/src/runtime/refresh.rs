//! Refreshing a held delayed message. Each hold by a nack with delay ends in another delivery, which
//! the broker counts (JetStream against the consumer's `MaxDeliver`, SQS against the redrive policy's
//! `maxReceiveCount`), and backends set that limit one above the runtime's attempts, so that the broker dead-letters
//! only what the runtime could not. A delay needing more holds than that (a week on NATS, a day a hold, with
//! `max_retries(2)`) would be dead-lettered or dropped by the broker without ever being handled. So a held delivery
//! whose count has reached the runtime's attempts (and at least 2) is not nacked once more: a fresh copy of it, its due
//! time kept, goes into the subscription ([`crate::SubscriptionDriver::requeue`], which also removes the original),
//! and the copy's count starts again at 1. The cost: one copy (a publish and an ack) per that many holds. Where the
//! runtime holds in process (Pub/Sub), a delivery is counted again only when a subscribing process stops while
//! holding it; the same rule refreshes one that came back that often (Pub/Sub's dead-letter policy stops at the
//! attempts).

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::Ctx;
use crate::backend::ReceivedMessage;
use crate::error::ErrorKind;

/// Whether a delivery `left` before its due time, about to be held, is to be refreshed instead: the runtime holds
/// it (the backend keeps no delays), more than the last second is left, and the broker has counted as many
/// deliveries of it as the runtime has attempts (at least 2: a first delivery is never refreshed, or each copy would
/// be copied again at once). Backends holding in process are included: there a delivery is counted again when the
/// subscribing process stops while holding it (Pub/Sub's dead-letter policy counts those, up to the attempts).
pub(super) fn wanted<T>(ctx: &Ctx<T>, m: &ReceivedMessage, left: Duration) -> bool {
    let held = !ctx.caps.delay && left > super::delay::IN_PROCESS;
    let attempts = ctx.runner.spec.config.retry.max_attempts();
    held && attempts.is_some_and(|max| m.attempt >= max.max(2))
}

/// Replaces a held delivery by a fresh copy with the same due time; where that fails (or the driver cannot requeue),
/// it is held as usual after all.
pub(super) fn start<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: &Arc<Ctx<T>>,
    m: ReceivedMessage,
    left: Duration,
) {
    tracing::debug!(target: "tidings", subscription = %ctx.runner.key.1, id = %m.id, deliveries = m.attempt,
        "refreshing a delivery held until its due time: a fresh copy replaces it");
    ctx.runner.activity.settled(1); // no longer in flight; a fallback nack below counts it again
    let due = tokio::time::Instant::now() + left;
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let driver = ctx.runner.driver.clone();
        let copy = vec![m.clone()];
        let r = crate::retry::call("requeue", Some(&ctx.runner.abort), || driver.requeue(copy.clone())).await;
        if let Err(e) = r {
            if e.kind() != ErrorKind::Unsupported {
                tracing::warn!(subscription = %ctx.runner.key.1, id = %m.id, error = %e,
                    "refreshing a held delivery failed; it is held once more, which the broker may count past its \
                     delivery limit");
            }
            ctx.runner.activity.received(1);
            super::delay::hold(&ctx, m, due.saturating_duration_since(tokio::time::Instant::now()));
        }
    });
}
