//! Delayed delivery completed by core, for backends without native delay (and for a foreign producer's due-time
//! attribute on any backend). A delivery whose [`DELIVER_AT_ATTRIBUTE`] lies in the future never reaches the handler
//! and counts no attempt: it is held, in the broker (a nack with a delay of the time left, capped by
//! [`crate::Capabilities::max_nack_delay`]) while more than [`IN_PROCESS`] is left and the backend can, otherwise here
//! (one delay heap per subscription, served by one task that also keeps the held leases alive). Once due, a delivery
//! is converted: the driver requeues a fresh copy without the attribute into this subscription
//! ([`crate::SubscriptionDriver::requeue`]) and removes the original, so the copy's delivery count, which the
//! runtime reads as the attempt, starts from the first real attempt however often the original was held. A backend
//! that keeps delays natively never holds by nack, so its due deliveries run as they are; so do those of a driver that
//! cannot requeue. A delivery the broker has counted as often as the runtime has attempts is not nacked once more
//! but replaced by a fresh copy, its due time kept (`refresh`), so no number of holds reaches the broker's own
//! delivery limit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::settle::nack;
use super::Ctx;
use crate::backend::wire::{parse_deliver_at, DELIVER_AT_ATTRIBUTE};
use crate::backend::{AckId, ReceivedMessage};
use crate::error::ErrorKind;

/// Below this much time left a held delivery waits in process rather than in the broker: a nack's delay is whole
/// seconds on some brokers, and a short wait here costs no broker call.
pub(super) const IN_PROCESS: Duration = Duration::from_secs(1);

/// Deliveries held in process until their due time, and the conversions under way or done.
#[derive(Default)]
pub(super) struct Delays {
    state: Mutex<State>,
    wake: Notify,
    conversions: Mutex<Conversions>,
}

/// How long a converted id is remembered: a delivery of a message already requeued (its original's ack was late or
/// lost, so the broker handed it out again) is removed rather than copied a second time.
const CONVERTED_WINDOW: Duration = Duration::from_secs(600);

/// Ids being converted (their requeue under way) and converted lately, so a redelivery of a message whose copy is
/// already (or about to be) in the subscription makes no second copy.
struct Conversions {
    running: std::collections::HashSet<crate::MessageId>,
    done: crate::backend::dedup::SeenIds<crate::MessageId>,
}

impl Default for Conversions {
    fn default() -> Self {
        Self { running: Default::default(), done: crate::backend::dedup::SeenIds::new(CONVERTED_WINDOW) }
    }
}

/// What is known of a due delivery's conversion.
enum Conversion {
    /// Its copy is in the subscription: the delivery only needs removing.
    Done,
    /// A requeue of it is under way: it comes back shortly, when that has ended.
    Running,
    /// It is to be converted (now marked as running).
    Start,
}

impl Delays {
    fn conversion(&self, id: &crate::MessageId) -> Conversion {
        let mut c = self.conversions.lock().unwrap();
        c.done.expire(Instant::now());
        if c.done.contains(id) {
            Conversion::Done
        } else if !c.running.insert(id.clone()) {
            Conversion::Running
        } else {
            Conversion::Start
        }
    }

    fn converted(&self, ids: &[crate::MessageId], ok: bool) {
        let mut c = self.conversions.lock().unwrap();
        let now = Instant::now();
        for id in ids {
            c.running.remove(id);
            if ok {
                c.done.insert(id.clone(), now);
            }
        }
    }
}

#[derive(Default)]
struct State {
    /// Due time and entry number, earliest first.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    held: HashMap<u64, Held>,
    next: u64,
}

/// A delivery held in process, and until when its lease is known to last (its receive or last extension plus the
/// ack deadline).
struct Held {
    m: ReceivedMessage,
    leased_until: Instant,
}

impl Delays {
    fn hold(&self, m: ReceivedMessage, due: Instant, leased_until: Instant) {
        let mut st = self.state.lock().unwrap();
        let n = st.next;
        st.next += 1;
        st.heap.push(Reverse((due, n)));
        st.held.insert(n, Held { m, leased_until });
        drop(st);
        self.wake.notify_one();
    }

    fn next_due(&self) -> Option<Instant> {
        self.state.lock().unwrap().heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The deliveries due at `now`, each with whether its lease ends before `renew_by` (and wants renewing before
    /// anything slow is done with it).
    fn take_due(&self, now: Instant, renew_by: Instant) -> Vec<(ReceivedMessage, bool)> {
        let mut st = self.state.lock().unwrap();
        let mut out = Vec::new();
        while let Some(Reverse((at, n))) = st.heap.peek().copied() {
            if at > now {
                break;
            }
            st.heap.pop();
            out.extend(st.held.remove(&n).map(|h| (h.m, h.leased_until < renew_by)));
        }
        out
    }

    /// The leases that end before `by`, now taken to last until `until` (the caller extends them).
    fn leases_ending(&self, by: Instant, until: Instant) -> Vec<AckId> {
        let mut st = self.state.lock().unwrap();
        let ending = st.held.values_mut().filter(|h| h.leased_until < by);
        ending
            .map(|h| {
                h.leased_until = until;
                h.m.ack_id.clone()
            })
            .collect()
    }

    /// Everything held, taken (at shutdown).
    pub(super) fn drain(&self) -> Vec<ReceivedMessage> {
        let mut st = self.state.lock().unwrap();
        st.heap.clear();
        st.held.drain().map(|(_, h)| h.m).collect()
    }
}

/// A delivery's due time, from its [`DELIVER_AT_ATTRIBUTE`].
fn due_of(m: &ReceivedMessage) -> Option<SystemTime> {
    if m.attributes.is_empty() {
        return None;
    }
    m.attributes.get(DELIVER_AT_ATTRIBUTE).and_then(|v| parse_deliver_at(v))
}

fn strip(mut m: ReceivedMessage) -> ReceivedMessage {
    m.attributes.remove(DELIVER_AT_ATTRIBUTE);
    m
}

/// Screens a freshly received batch: deliveries not yet due are held, due ones carrying the attribute are converted
/// (held backends) or run without it (native ones); returns what runs now.
pub(super) fn screen<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: &Arc<Ctx<T>>,
    batch: Vec<ReceivedMessage>,
) -> Vec<ReceivedMessage> {
    if batch.iter().all(|m| m.attributes.is_empty()) {
        return batch;
    }
    let now = SystemTime::now();
    let (mut out, mut due) = (Vec::with_capacity(batch.len()), Vec::new());
    for m in batch {
        let Some(at) = due_of(&m) else {
            out.push(m);
            continue;
        };
        match at.duration_since(now) {
            Ok(left) if !left.is_zero() && super::refresh::wanted(ctx, &m, left) => super::refresh::start(ctx, m, left),
            Ok(left) if !left.is_zero() => hold(ctx, m, left),
            _ => due.push(m),
        }
    }
    if !due.is_empty() {
        if ctx.caps.delay {
            out.extend(due.into_iter().map(strip));
        } else {
            // Fresh from a receive: their leases have just begun and need no renewing before the requeue.
            convert_due(ctx, due.into_iter().map(|m| (m, false)).collect(), true);
        }
    }
    out
}

/// Converts due deliveries, once per message: one whose copy was made lately is only removed, one being converted
/// comes back a second later. `in_flight`: they count as in flight (fresh from a receive), not held. Each comes with
/// whether its lease wants renewing before the requeue.
fn convert_due<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: &Arc<Ctx<T>>,
    due: Vec<(ReceivedMessage, bool)>,
    in_flight: bool,
) {
    let mut fresh = Vec::with_capacity(due.len());
    for (m, renew) in due {
        let conversion = ctx.delays.conversion(&m.id);
        if !matches!(conversion, Conversion::Start) && !in_flight {
            ctx.runner.activity.received(1); // settled below, through the settle loop
        }
        match conversion {
            Conversion::Done => {
                let _ = ctx.settle.send(super::settle::Settle::Ack(m.ack_id));
            }
            Conversion::Running => nack(ctx, m.ack_id, IN_PROCESS),
            Conversion::Start => fresh.push((m, renew)),
        }
    }
    if fresh.is_empty() {
        return;
    }
    if in_flight {
        ctx.runner.activity.settled(fresh.len());
    }
    tokio::spawn(convert(ctx.clone(), fresh));
}

/// Holds a delivery `left` before its due time: in the broker by a nack with delay where the backend holds none
/// natively and can delay a nack (asked back [`crate::Capabilities::nack_hold_lead`] before due), else in process.
/// Either way it no longer counts as in flight.
pub(super) fn hold<T>(ctx: &Ctx<T>, m: ReceivedMessage, left: Duration) {
    let c = &ctx.caps;
    tracing::debug!(target: "tidings", subscription = %ctx.runner.key.1, id = %m.id, left = ?left,
        "holding a delivery until its due time");
    if !c.delay && c.nack_delay && !c.max_nack_delay.is_zero() && left > IN_PROCESS + c.nack_hold_lead {
        // the settle loop counts it as settled
        nack(ctx, m.ack_id, (left - c.nack_hold_lead).min(c.max_nack_delay));
    } else {
        ctx.runner.activity.settled(1);
        let now = Instant::now();
        ctx.delays.hold(m, now + left, now + ctx.runner.spec.config.ack_deadline);
    }
}

/// Converts due deliveries: a fresh copy of each without the due attribute goes into the subscription and the
/// original is removed; a driver that cannot requeue has them run as they are.
async fn convert<T: DeserializeOwned + Send + Sync + 'static>(ctx: Arc<Ctx<T>>, due: Vec<(ReceivedMessage, bool)>) {
    // A lease with less than a third of the ack deadline left is renewed first, so it does not run out (and the
    // broker hand the message out again) while the copy is being made; a younger one is not (a call fewer, and the
    // copy sooner).
    let leases: Vec<AckId> = due.iter().filter(|(_, renew)| *renew).map(|(m, _)| m.ack_id.clone()).collect();
    let copies: Vec<ReceivedMessage> = due.into_iter().map(|(m, _)| strip(m)).collect();
    let ids: Vec<crate::MessageId> = copies.iter().map(|m| m.id.clone()).collect();
    if !leases.is_empty() {
        let _ = ctx.runner.extend(leases, ctx.runner.spec.config.ack_deadline).await;
    }
    let driver = ctx.runner.driver.clone();
    let requeued = crate::retry::call("requeue", Some(&ctx.runner.abort), || driver.requeue(copies.clone())).await;
    ctx.delays.converted(&ids, requeued.is_ok());
    match requeued {
        Ok(()) => {
            tracing::debug!(target: "tidings", subscription = %ctx.runner.key.1, n = copies.len(),
                "due deliveries requeued as fresh copies");
        }
        Err(e) if e.kind() == ErrorKind::Unsupported => super::receive::run_now(&ctx, copies),
        Err(e) => {
            tracing::warn!(subscription = %ctx.runner.key.1, error = %e,
                "requeueing due deliveries failed; they come back at once and are tried again");
            ctx.runner.activity.received(copies.len());
            for m in copies {
                nack(&ctx, m.ack_id, Duration::ZERO);
            }
        }
    }
}

/// The task that serves the in-process holds: wakes at the earliest due time (converting or running what is due)
/// and every third of the ack deadline (extending the held leases that would end soon after the next wake: a delivery
/// held a moment before its due time costs no extension), until aborted.
pub(super) fn spawn_holder<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: &Arc<Ctx<T>>,
) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    let deadline = ctx.runner.spec.config.ack_deadline;
    let period = (deadline / 3).max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut next_extend = Instant::now() + period;
        loop {
            let wake_at = ctx.delays.next_due().map_or(next_extend, |d| d.min(next_extend));
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = ctx.delays.wake.notified() => continue,
            }
            let now = Instant::now();
            let due = ctx.delays.take_due(now, now + period);
            if !due.is_empty() {
                if ctx.caps.delay {
                    let ids = due.iter().map(|(m, _)| m.ack_id.clone()).collect();
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        // Its lease began at its receive or last extension: renew it for the handler.
                        let _ = ctx.runner.extend(ids, deadline).await;
                        super::receive::run_now(&ctx, due.into_iter().map(|(m, _)| strip(m)).collect());
                    });
                } else {
                    convert_due(&ctx, due, false);
                }
            }
            if now >= next_extend {
                next_extend = now + period;
                // Renewed when less than two and a half periods are left: every wake once renewed, and a lease with
                // at least one and a half left when it is first renewed.
                let ids = ctx.delays.leases_ending(now + period * 5 / 2, now + deadline);
                if !ids.is_empty() {
                    if let Err(e) = ctx.runner.extend(ids, deadline).await {
                        tracing::warn!(subscription = %ctx.runner.key.1, error = %e,
                            "lease extension of deliveries held until their due time failed");
                    }
                }
            }
        }
    })
}
