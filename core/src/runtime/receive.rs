//! Receiving: receives sized to the free handler slots, batches split into groups of chains (one per ordering key on
//! ordered topics), and one task per group that begins each delivery and hands it on to be settled. On an ordered
//! topic whose backend lacks native ordering, each batch passes through the subscription's [`Sequencer`] first, and a
//! key's messages run one after another in one task ([`run_key`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::deliver::{begin, Begin, Done};
use super::sequence::{Arrival, Sequencer};
use super::settle::{ack_now, conclude, nack, settle_like, settled_ack, Outcome};
use super::{Attempt, Ctx};
use crate::backend::ReceivedMessage;

/// Longest single receive call; shutdown interrupts it.
pub(super) const RECEIVE_WAIT: Duration = Duration::from_secs(20);
/// Chains (messages, on unordered topics) handled by one spawned task.
const CHAINS_PER_TASK: usize = 16;
/// How often a subscription whose sequencer is saturated looks again whether it may receive.
pub(super) const SATURATED_POLL: Duration = Duration::from_millis(20);

/// Receives and runs deliveries (one by one, or in batches: [`super::batch`]) until the subscription stops; then
/// lets the handlers running finish (or the shutdown timeout abort them) and gives back what is held.
pub(super) async fn receive_loop<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: Arc<Ctx<T>>,
    gathered: Option<super::batch::Gathered>,
) {
    let mut tasks = JoinSet::new();
    let keeper = ctx.seq.as_ref().map(|q| keep_leases(&ctx, q.clone()));
    let holder = super::delay::spawn_holder(&ctx);
    let mut gathered = gathered;
    match &mut gathered {
        None => receive_singles(&ctx, &mut tasks).await,
        Some(gathered) => super::batch::gather(&ctx, gathered, &mut tasks).await,
    }
    // Graceful shutdown: let in-flight handlers finish unless the shutdown timeout aborts them.
    loop {
        tokio::select! {
            r = tasks.join_next() => match r { Some(r) => log_task_end(r), None => break },
            _ = ctx.runner.abort.cancelled() => { tasks.abort_all(); while tasks.join_next().await.is_some() {} break }
        }
    }
    // What is held until its due time goes back at once (to be held again by whoever receives it).
    holder.abort();
    let held = ctx.delays.drain();
    ctx.runner.activity.received(held.len());
    for m in held {
        nack(&ctx, m.ack_id, Duration::ZERO);
    }
    // What the sequencer still holds goes back at once, rather than waiting out its lease.
    if let (Some(keeper), Some(q)) = (keeper, &ctx.seq) {
        keeper.abort();
        for m in q.drain() {
            nack(&ctx, m.ack_id, Duration::ZERO);
        }
    }
    // What was on its way to the next batch too (later arrivals find the way closed and go back on their own).
    if let Some(gathered) = &mut gathered {
        gathered.close();
        while let Ok((m, _)) = gathered.try_recv() {
            nack(&ctx, m.ack_id, Duration::ZERO);
        }
    }
}

/// The receive loop of a single handler: receives sized to the free handler slots, each delivery run on its own.
async fn receive_singles<T: DeserializeOwned + Send + Sync + 'static>(ctx: &Arc<Ctx<T>>, tasks: &mut JoinSet<()>) {
    let sem = ctx.slots.clone();
    let max_batch = ctx.caps.max_receive_batch.max(1);
    let cancel = ctx.runner.cancel.clone();
    let mut error_backoff = Duration::from_millis(100);
    let ordered = ctx.runner.spec.topic.config.ordered;
    // Ordered topics keep one receive at a time: the broker's hand-out order is the delivery order.
    let max_receives = if ordered { 1 } else { ctx.caps.concurrent_receives.max(1) };
    // Each receive in flight holds a handler slot for every message it asked for; unused slots go back on return.
    let mut receiving = FuturesUnordered::new();
    // Receives wanted in flight: one more after each full batch (up to the capability), back to one after a partial.
    let mut wanted = 1;
    'run: loop {
        while receiving.len() < wanted {
            if ctx.seq.as_ref().is_some_and(|q| q.saturated()) {
                if !receiving.is_empty() {
                    break;
                }
                // As many wait behind their keys as the sequencer parks: no receive until some are let out.
                tokio::select! {
                    _ = tokio::time::sleep(SATURATED_POLL) => continue,
                    _ = cancel.cancelled() => break 'run,
                }
            }
            let mut slots = if receiving.is_empty() {
                tokio::select! {
                    p = sem.clone().acquire_owned() => p.expect("semaphore is never closed"),
                    _ = cancel.cancelled() => break 'run,
                }
            } else {
                match sem.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            let n = (1 + sem.available_permits()).min(max_batch);
            if n > 1 {
                slots.merge(sem.clone().try_acquire_many_owned(n as u32 - 1).expect("only this loop takes slots"));
            }
            let (driver, metrics, seq) = (ctx.runner.driver.clone(), ctx.runner.metrics.clone(), ctx.seq.clone());
            receiving.push(async move {
                // Messages the sequencer released (their key's retried message was given up) go before a receive.
                if let Some((ready, Some(since))) = seq.map(|q| q.take_ready(n)) {
                    return (Ok(ready), slots, Some(since));
                }
                let started = metrics.start();
                let received = driver.receive(n, RECEIVE_WAIT).await;
                metrics.received(started);
                (received, slots, None)
            });
        }
        let (received, mut slots, released) = tokio::select! {
            Some(r) = receiving.next() => r,
            _ = cancel.cancelled() => break,
        };
        match received {
            Ok(batch) => {
                // Every lease of the batch started about now: extensions are scheduled from here, not from when a
                // handler happens to start (on a busy machine that can be much later). Released messages' leases
                // began at their last extension.
                let (batch, received_at) = match released {
                    Some(since) => (batch, since),
                    None => {
                        let now = Instant::now();
                        if !batch.is_empty() {
                            ctx.runner.activity.received(batch.len());
                        }
                        wanted = if batch.len() == slots.num_permits() { (wanted + 1).min(max_receives) } else { 1 };
                        (sort(ctx, super::delay::screen(ctx, batch), now), now)
                    }
                };
                error_backoff = Duration::from_millis(100);
                // One slot per delivery, handed to the groups in slices; the ones asked for but not filled go back.
                let mut permits = match slots.split(batch.len()) {
                    Some(used) => used,
                    None => std::mem::replace(&mut slots, empty_permit(&sem)),
                };
                drop(slots);
                // One task per group of chains rather than per message: spawning dominated the cost of a delivery.
                // Handlers in a group still run concurrently (and release their slots as they finish).
                // Unordered messages go straight from the batch into their group (each moved once).
                let all: Box<dyn Iterator<Item = Chain> + Send> = if ordered && ctx.seq.is_none() {
                    Box::new(chains(batch).into_iter())
                } else {
                    Box::new(batch.into_iter().map(Chain::One))
                };
                let mut all = all.peekable();
                while all.peek().is_some() {
                    let group: Vec<Chain> = all.by_ref().take(CHAINS_PER_TASK).collect();
                    let n: usize = group.iter().map(Chain::len).sum();
                    let slots = if all.peek().is_some() { permits.split(n) } else { None };
                    let slots = slots.unwrap_or_else(|| std::mem::replace(&mut permits, empty_permit(&sem)));
                    tasks.spawn(run_group(ctx.clone(), group, slots, received_at));
                }
            }
            Err(e) => {
                tracing::warn!(subscription = %ctx.runner.key.1, error = %e, retry_in = ?error_backoff, "receive failed");
                drop(slots);
                wanted = 1;
                if receiving.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(crate::backend::time::jittered(error_backoff)) => {},
                        _ = cancel.cancelled() => break,
                    }
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        while let Some(r) = tasks.try_join_next() {
            log_task_end(r);
        }
    }
}

pub(super) fn log_task_end(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        if e.is_panic() {
            tracing::error!(error = %e, "tidings handler task panicked outside the handler");
        }
    }
}

/// Nacks, without delay, deliveries no handler started.
fn release<T>(ctx: &Ctx<T>, chain: Chain) {
    let msgs = match chain {
        Chain::One(m) => vec![m],
        Chain::Many(v) => v,
    };
    for m in msgs {
        nack(ctx, m.ack_id, Duration::ZERO);
    }
}

/// Runs deliveries that come from neither a receive nor the sequencer (held in process until their due time, now due,
/// where they are not requeued: a native backend's foreign due-time attribute, a driver without `requeue`): through
/// the sequencer where the subscription has one, each on a free handler slot, or else on none (a batch subscription's
/// go into the batch being gathered). A receive in flight
/// holds the free slots for up to its wait, and the held delivery's lease would run out meanwhile; so these few may
/// run above `max_concurrency`, by at most the number of deliveries held in process.
pub(super) fn run_now<T: DeserializeOwned + Send + Sync + 'static>(ctx: &Arc<Ctx<T>>, msgs: Vec<ReceivedMessage>) {
    let now = Instant::now();
    ctx.runner.activity.received(msgs.len());
    if let super::Handling::Batch { .. } = ctx.handler {
        // A batch subscription: into the batch being gathered (within `max_concurrency`, as every batch).
        for m in sort(ctx, msgs, now) {
            super::batch::to_next_batch(ctx, m, now);
        }
        return;
    }
    for m in sort(ctx, msgs, now) {
        let slot = ctx.slots.clone().try_acquire_owned().unwrap_or_else(|_| empty_permit(&ctx.slots));
        tokio::spawn(run_group(ctx.clone(), vec![Chain::One(m)], slot, now));
    }
}

/// Messages handled one after another: one per ordering key on ordered topics (a broker such as SQS FIFO hands out
/// several messages of one group at once), a single message otherwise.
enum Chain {
    One(ReceivedMessage),
    Many(Vec<ReceivedMessage>),
}

impl Chain {
    fn len(&self) -> usize {
        match self {
            Chain::One(_) => 1,
            Chain::Many(v) => v.len(),
        }
    }
}

/// The chains of an ordered topic's batch: one per ordering key, in batch order, and one per message without a key.
fn chains(batch: Vec<ReceivedMessage>) -> Vec<Chain> {
    let by_key = by_key(batch, |m| m.ordering_key.as_ref());
    by_key
        .into_iter()
        .map(|mut c| if c.len() == 1 { Chain::One(c.pop().expect("one")) } else { Chain::Many(c) })
        .collect()
}

/// Items grouped by ordering key, each key's in their order (keys in order of first appearance); an item without a key
/// is a group of its own.
pub(super) fn by_key<I>(items: Vec<I>, key: impl Fn(&I) -> Option<&Arc<str>>) -> Vec<Vec<I>> {
    let mut groups: Vec<Vec<I>> = Vec::with_capacity(items.len());
    let mut index: std::collections::HashMap<Arc<str>, usize> = std::collections::HashMap::new();
    for item in items {
        let Some(k) = key(&item).cloned() else {
            groups.push(vec![item]);
            continue;
        };
        match index.get(&k) {
            Some(&i) => groups[i].push(item),
            None => {
                index.insert(k, groups.len());
                groups.push(vec![item]);
            }
        }
    }
    groups
}

/// A permit holding no slot, to split the others from.
pub(super) fn empty_permit(sem: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    sem.clone().try_acquire_many_owned(0).expect("zero permits are always available")
}

type Delivery = (ReceivedMessage, OwnedSemaphorePermit);
type Slow = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a group of chains within one task. The fast path: each single message is decoded and its handler polled
/// once, inline; the acks of every handler that finished right there go to the driver in one call, and their slots
/// are released together. Handlers still running, failures and ordered chains continue concurrently.
async fn run_group<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: Arc<Ctx<T>>,
    group: Vec<Chain>,
    mut slots: OwnedSemaphorePermit,
    received_at: Instant,
) {
    let mut acks = Vec::with_capacity(slots.num_permits());
    let mut slow: FuturesUnordered<Slow> = FuturesUnordered::new();
    for chain in group {
        if ctx.runner.cancel.is_cancelled() {
            // Shutdown began after this batch was received: what no handler started goes back at once.
            release(&ctx, chain);
            continue;
        }
        match chain {
            Chain::One(msg) => {
                let keyed = ctx.seq.is_some() && msg.ordering_key.is_some();
                match begin(&ctx, &msg).await {
                    (Begin::Done(Done::Ok), a) if !keyed => {
                        settled_ack(&ctx, &a);
                        acks.push(msg.ack_id)
                    }
                    (b, a) => {
                        let permit = slots.split(1).expect("one slot per delivery");
                        slow.push(match keyed {
                            true => Box::pin(run_key(ctx.clone(), msg, permit, (b, a), received_at)),
                            false => Box::pin(conclude(ctx.clone(), msg, permit, b, a, received_at).map(drop)),
                        });
                    }
                }
            }
            Chain::Many(msgs) => {
                let chain: Vec<Delivery> =
                    msgs.into_iter().map(|m| (m, slots.split(1).expect("one slot per delivery"))).collect();
                slow.push(Box::pin(process_chain(ctx.clone(), chain, received_at)));
            }
        }
    }
    drop(slots);
    // The fast path's acks go straight to the driver, one call per group, while the slow ones run on.
    let ack = async {
        if !acks.is_empty() {
            ack_now(&ctx, acks).await;
        }
    };
    futures_util::future::join(ack, async { while slow.next().await.is_some() {} }).await;
}

/// Handles a chain in order; once one message is to be retried, the rest of its chain go back unhandled with the same
/// delay, so they are redelivered after it.
async fn process_chain<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: Arc<Ctx<T>>,
    chain: Vec<Delivery>,
    received_at: Instant,
) {
    let mut chain = chain.into_iter();
    while let Some((msg, permit)) = chain.next() {
        if ctx.runner.cancel.is_cancelled() {
            // Shutdown: the rest of the chain goes back at once, in order, rather than waiting out its lease.
            release(&ctx, Chain::Many(std::iter::once(msg).chain(chain.map(|(m, _)| m)).collect()));
            return;
        }
        let (b, a) = begin(&ctx, &msg).await;
        if let Outcome::Retried(delay) = conclude(ctx.clone(), msg, permit, b, a, received_at).await {
            // The same delay: brokers that let later messages of a group through while an earlier one is invisible
            // (LocalStack does) still return them after it.
            for (rest, _permit) in chain.by_ref() {
                nack(&ctx, rest.ack_id, delay);
            }
        }
    }
}

/// Sorts a fresh batch through the sequencer, where the subscription has one: what may run now.
pub(super) fn sort<T>(ctx: &Ctx<T>, batch: Vec<ReceivedMessage>, now: Instant) -> Vec<ReceivedMessage> {
    let Some(q) = &ctx.seq else { return batch };
    let mut out = Vec::with_capacity(batch.len());
    for m in batch {
        match q.arrive(m, now) {
            Arrival::Out(m) => out.push(m),
            Arrival::Held => {}
            // The older delivery is forgotten, so it no longer counts as in flight.
            Arrival::Replaced => ctx.runner.activity.settled(1),
        }
    }
    out
}

/// Runs a key's message that the sequencer let out and then, each time one is acked or dead-lettered, the key's next
/// one, in this task and on this handler slot: the slot passes from one message to the next (`conclude` is handed
/// none), so a receive cannot take it in between. On a backend without nack delay, a retried message thus keeps its
/// slot while it is held for its backoff.
async fn run_key<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: Arc<Ctx<T>>,
    mut msg: ReceivedMessage,
    mut slot: OwnedSemaphorePermit,
    begun: (Begin, Attempt),
    mut leased_at: Instant,
) {
    let seq = ctx.seq.clone().expect("keyed deliveries run on sequenced subscriptions");
    let mut begun = Some(begun);
    loop {
        let (key, id) = (msg.ordering_key.clone().expect("a keyed delivery"), msg.id.clone());
        let (b, a) = match begun.take() {
            Some(begun) => begun,
            None => begin(&ctx, &msg).await,
        };
        let none = slot.split(0).expect("zero slots are always there");
        let outcome = conclude(ctx.clone(), msg, none, b, a, leased_at).await;
        let finished = seq.finished(&key, &id, outcome, Instant::now());
        if let Some(again) = finished.again {
            settle_like(&ctx, again, outcome);
        }
        let Some((next, since)) = finished.next else { return };
        if ctx.runner.cancel.is_cancelled() {
            nack(&ctx, next.ack_id, Duration::ZERO); // shutdown: it goes back at once
            return;
        }
        (msg, leased_at) = (next, since);
    }
}

/// Keeps the leases of what the sequencer holds alive (every third of the ack deadline, as for a running handler),
/// and gives up retried messages whose redelivery is overdue, until aborted.
fn keep_leases<T>(ctx: &Ctx<T>, q: Arc<Sequencer>) -> tokio::task::JoinHandle<()> {
    let runner = ctx.runner.clone();
    let deadline = runner.spec.config.ack_deadline;
    let period = (deadline / 3).max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut next = Instant::now() + period;
        loop {
            tokio::time::sleep_until(next).await;
            let now = Instant::now();
            next = now + period;
            q.give_up_overdue(now);
            let held = q.extend(now);
            if held.is_empty() {
                continue;
            }
            let subscription = &runner.key.1;
            tracing::debug!(target: "tidings", %subscription, held = held.len(), tidings.settle = "extend_lease",
                "extending the leases of messages waiting behind their ordering key");
            if let Err(e) = runner.extend(held, deadline).await {
                tracing::warn!(%subscription, error = %e, "lease extension of messages waiting behind their key failed");
            }
        }
    })
}
