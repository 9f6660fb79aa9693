//! The runtime that runs one subscription's handlers, written once for every backend: receive sized to free
//! handler slots, decode, dispatch with panic isolation, lease extension, backoff, attempt counting, dead-letter
//! decisions, batched settlement, and graceful shutdown.

use std::any::type_name;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backend::{AckId, Capabilities, DeadLetterRequest, ReceivedMessage, SubscriptionDriver, SubscriptionSpec};
use crate::handler::Handler;
use crate::message::{Message, Metadata};
use crate::metrics::{DeadReason, Settled, Started, SubscriptionMetrics};
use tracing::Span;

mod handle;
mod shutdown;
pub use handle::Subscription;
pub(crate) use shutdown::stop_all;

/// Longest single receive call; shutdown interrupts it.
const RECEIVE_WAIT: Duration = Duration::from_secs(20);
/// Most settlements applied per driver call.
const SETTLE_BATCH: usize = 1000;
/// Chains (messages, on unordered topics) handled by one spawned task.
const CHAINS_PER_TASK: usize = 16;

/// Shared state of one running subscription.
pub(crate) struct Runner {
    pub(crate) key: (String, String),
    pub(crate) spec: SubscriptionSpec,
    pub(crate) driver: Arc<dyn SubscriptionDriver>,
    cancel: CancellationToken,
    /// The handlers' view of `cancel` ([`Message::shutdown_requested`]): one shared pointer per message.
    shutdown_signal: Arc<CancellationToken>,
    abort: CancellationToken,
    /// Cancelled once no handler runs any more (they finished, or the shutdown timeout aborted them).
    drained: CancellationToken,
    stopped: AtomicBool,
    done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    finished: tokio::sync::Notify,
    pub(crate) activity: Arc<Activity>,
    pub(crate) metrics: Arc<SubscriptionMetrics>,
}

/// What a subscription is doing, for [`crate::Subscription::wait_quiet`]: deliveries received and not yet settled,
/// and when the last one was received.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    last_received: Mutex<tokio::time::Instant>,
}

impl Activity {
    fn received(&self, n: usize) {
        self.in_flight.fetch_add(n, Ordering::AcqRel);
        *self.last_received.lock().unwrap() = tokio::time::Instant::now();
    }

    fn settled(&self, n: usize) {
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
    }

    /// Nothing in flight, and nothing received for `quiet`.
    pub(crate) fn is_quiet(&self, quiet: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.last_received.lock().unwrap().elapsed() >= quiet
    }
}

impl Runner {
    pub(crate) fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Cancelled when the subscription begins to shut down.
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

enum Settle {
    Ack(AckId),
    Nack(AckId, Duration),
    DeadLetter(DeadLetterRequest),
}

struct Ctx<T> {
    runner: Arc<Runner>,
    caps: Capabilities,
    handler: Box<dyn Handler<T>>,
    settle: mpsc::UnboundedSender<Settle>,
    /// `messaging.system` of the process spans.
    system: String,
    /// `otel.name` of the process spans: `process <subscription>`.
    span_name: String,
}

/// One delivery attempt: its span, and when its handler started (for the metrics).
struct Attempt {
    span: Span,
    started: Started,
}

impl<T> Ctx<T> {
    /// The consumer span of one delivery attempt, connected to the context the message carried.
    fn process_span(&self, msg: &ReceivedMessage) -> Span {
        let spec = &self.runner.spec;
        let span = tracing::info_span!(
            target: "tidings",
            "process",
            otel.name = %self.span_name,
            otel.kind = "consumer",
            messaging.system = %self.system,
            messaging.destination.name = %spec.topic.name,
            messaging.destination.subscription.name = %spec.name,
            messaging.consumer.group.name = %spec.name,
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.message.id = %msg.id,
            tidings.delivery.attempt = i64::from(msg.attempt),
            error.type = tracing::field::Empty,
        );
        crate::trace::connect(msg.trace.as_ref(), &span);
        span
    }
}

pub(crate) fn start<T, H>(
    backend: &str,
    key: (String, String),
    spec: SubscriptionSpec,
    driver: Arc<dyn SubscriptionDriver>,
    caps: Capabilities,
    handler: H,
) -> Arc<Runner>
where
    T: DeserializeOwned + Send + Sync + 'static,
    H: Handler<T>,
{
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let cancel = CancellationToken::new();
    let (spec_topic, spec_name) = (spec.topic.name.clone(), spec.name.clone());
    let runner = Arc::new(Runner {
        key,
        spec,
        driver: driver.clone(),
        shutdown_signal: Arc::new(cancel.clone()),
        cancel,
        abort: CancellationToken::new(),
        drained: CancellationToken::new(),
        stopped: AtomicBool::new(false),
        done: Mutex::new(Some(done_rx)),
        finished: tokio::sync::Notify::new(),
        activity: Arc::new(Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last_received: Mutex::new(tokio::time::Instant::now()),
        }),
        metrics: Arc::new(SubscriptionMetrics::new(backend, &spec_topic, &spec_name)),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let settler = tokio::spawn(settle_loop(driver.clone(), rx, runner.activity.clone(), runner.metrics.clone()));
    let system = crate::trace::messaging_system(backend, false).to_string();
    let span_name = format!("process {}", runner.spec.name);
    let ctx = Arc::new(Ctx { runner: runner.clone(), caps, handler: Box::new(handler), settle: tx, system, span_name });
    tokio::spawn(async move {
        receive_loop(ctx.clone()).await;
        let runner = ctx.runner.clone();
        runner.drained.cancel();
        drop(ctx);
        let _ = settler.await;
        if let Err(e) = driver.close().await {
            tracing::warn!(subscription = %runner.key.1, error = %e, "closing the subscription driver failed");
        }
        runner.stopped.store(true, Ordering::Release);
        let _ = done_tx.send(());
    });
    runner
}

async fn receive_loop<T: DeserializeOwned + Send + Sync + 'static>(ctx: Arc<Ctx<T>>) {
    let cfg = ctx.runner.spec.config;
    let sem = Arc::new(Semaphore::new(cfg.max_concurrency));
    let max_batch = ctx.caps.max_receive_batch.max(1);
    let cancel = ctx.runner.cancel.clone();
    let mut tasks = JoinSet::new();
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
            let (driver, metrics) = (ctx.runner.driver.clone(), ctx.runner.metrics.clone());
            receiving.push(async move {
                let started = metrics.start();
                let received = driver.receive(n, RECEIVE_WAIT).await;
                metrics.received(started);
                (received, slots)
            });
        }
        let (received, mut slots) = tokio::select! {
            Some(r) = receiving.next() => r,
            _ = cancel.cancelled() => break,
        };
        match received {
            Ok(batch) => {
                // Every lease of the batch started about now: extensions are scheduled from here, not from when a
                // handler happens to start (on a busy machine that can be much later).
                let received_at = tokio::time::Instant::now();
                if !batch.is_empty() {
                    ctx.runner.activity.received(batch.len());
                }
                error_backoff = Duration::from_millis(100);
                wanted = if batch.len() == slots.num_permits() { (wanted + 1).min(max_receives) } else { 1 };
                // One slot per delivery, handed to the groups in slices; the ones asked for but not filled go back.
                let mut permits = match slots.split(batch.len()) {
                    Some(used) => used,
                    None => std::mem::replace(&mut slots, empty_permit(&sem)),
                };
                drop(slots);
                // One task per group of chains rather than per message: spawning dominated the cost of a delivery.
                // Handlers in a group still run concurrently (and release their slots as they finish).
                // Unordered messages go straight from the batch into their group (each moved once).
                let all: Box<dyn Iterator<Item = Chain> + Send> = if ordered {
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
                        _ = tokio::time::sleep(crate::time::jittered(error_backoff)) => {},
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
    drop(receiving);
    // Graceful shutdown: let in-flight handlers finish unless the shutdown timeout aborts them.
    loop {
        tokio::select! {
            r = tasks.join_next() => match r { Some(r) => log_task_end(r), None => break },
            _ = ctx.runner.abort.cancelled() => { tasks.abort_all(); while tasks.join_next().await.is_some() {} break }
        }
    }
}

fn log_task_end(r: Result<(), tokio::task::JoinError>) {
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
        let _ = ctx.settle.send(Settle::Nack(m.ack_id, Duration::ZERO));
    }
}

/// How one delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    DeadLettered,
    /// Nacked with this delay.
    Retried(Duration),
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
    let mut chains: Vec<Chain> = Vec::with_capacity(batch.len());
    let mut by_key: std::collections::HashMap<Arc<str>, usize> = std::collections::HashMap::new();
    for m in batch {
        let Some(key) = m.ordering_key.clone() else {
            chains.push(Chain::One(m));
            continue;
        };
        match by_key.get(&key) {
            Some(&i) => match &mut chains[i] {
                Chain::Many(v) => v.push(m),
                one @ Chain::One(_) => {
                    let Chain::One(first) = std::mem::replace(one, Chain::Many(Vec::new())) else { unreachable!() };
                    *one = Chain::Many(vec![first, m]);
                }
            },
            None => {
                by_key.insert(key, chains.len());
                chains.push(Chain::One(m));
            }
        }
    }
    chains
}

/// A permit holding no slot, to split the others from.
fn empty_permit(sem: &Arc<Semaphore>) -> OwnedSemaphorePermit {
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
    received_at: tokio::time::Instant,
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
            Chain::One(msg) => match begin(&ctx, &msg).await {
                (Begin::Done(Done::Ok), a) => {
                    settled_ack(&ctx, &a);
                    acks.push(msg.ack_id)
                }
                (b, a) => {
                    let permit = slots.split(1).expect("one slot per delivery");
                    slow.push(Box::pin(conclude(ctx.clone(), msg, permit, b, a, received_at).map(drop)));
                }
            },
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
            let n = acks.len();
            let started = ctx.runner.metrics.start();
            if let Err(e) = ctx.runner.driver.ack(acks).await {
                tracing::warn!(error = %e, "ack failed; the messages may be redelivered");
            }
            ctx.runner.metrics.settle_call(started);
            ctx.runner.activity.settled(n);
        }
    };
    futures_util::future::join(ack, async { while slow.next().await.is_some() {} }).await;
}

/// Handles a chain in order; once one message is to be retried, the rest of its chain go back unhandled with the same
/// delay, so they are redelivered after it.
async fn process_chain<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: Arc<Ctx<T>>,
    chain: Vec<Delivery>,
    received_at: tokio::time::Instant,
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
                let _ = ctx.settle.send(Settle::Nack(rest.ack_id, delay));
            }
        }
    }
}

/// How a handler call ended.
enum Done {
    Ok,
    /// To the DLQ at once, with this reason (undecodable payload, unrecoverable error).
    DeadLetter(String),
    /// To retry (or dead-letter once retries are exhausted), with this reason.
    Failed(String),
}

/// Start of the failure text of a handler that panicked.
const PANIC_PREFIX: &str = "handler panicked: ";

type Running = futures_util::future::CatchUnwind<AssertUnwindSafe<InSpan>>;

/// A handler's future, polled inside its delivery's span (when that span is enabled). A plain wrapper: tracing's
/// `Instrumented` (which also enters the span to drop the future) slowed deliveries whose handler panicked.
struct InSpan {
    span: Span,
    fut: crate::handler::HandlerFuture,
}

impl Future for InSpan {
    type Output = crate::handler::HandlerResult;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.span.is_disabled() {
            return this.fut.as_mut().poll(cx);
        }
        let _entered = this.span.enter();
        this.fut.as_mut().poll(cx)
    }
}

/// The first part of a delivery, without waiting: decode, call the handler, poll it once.
enum Begin {
    Done(Done),
    Running(Running),
}

fn done(r: std::thread::Result<crate::handler::HandlerResult>) -> Done {
    match r {
        Ok(Ok(())) => Done::Ok,
        Ok(Err(e)) if e.is_unrecoverable() => Done::DeadLetter(format!("unrecoverable: {e}")),
        Ok(Err(e)) => Done::Failed(e.to_string()),
        Err(panic) => Done::Failed(format!("{PANIC_PREFIX}{}", panic_message(&panic))),
    }
}

async fn begin<T: DeserializeOwned + Send + Sync + 'static>(ctx: &Ctx<T>, msg: &ReceivedMessage) -> (Begin, Attempt) {
    let span = ctx.process_span(msg);
    let started = ctx.runner.metrics.handler_started(msg.publish_time);
    let payload = match serde_json::from_slice::<T>(&msg.payload) {
        Ok(p) => p,
        Err(e) => {
            span.record("error.type", "poison");
            let reason = format!("poison message: payload cannot be decoded as {}: {e}", type_name::<T>());
            return (Begin::Done(Done::DeadLetter(reason)), Attempt { span, started });
        }
    };
    let meta = Metadata {
        id: msg.id.clone(),
        publish_time: msg.publish_time,
        attempt: msg.attempt,
        attributes: msg.attributes.clone(),
        ordering_key: msg.ordering_key.as_deref().map(str::to_string),
    };
    let message = Message::with_shutdown(payload, meta, ctx.runner.shutdown_signal.clone());
    let called = span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| ctx.handler.call(message))));
    let mut fut = match called {
        Ok(fut) => AssertUnwindSafe(InSpan { span: span.clone(), fut }).catch_unwind(),
        Err(panic) => return (Begin::Done(done(Err(panic))), Attempt { span, started }),
    };
    // Most handlers finish on their first poll: then nothing more is allocated or scheduled for them.
    let begun = match std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx))).await {
        Poll::Ready(r) => Begin::Done(done(r)),
        Poll::Pending => Begin::Running(fut),
    };
    (begun, Attempt { span, started })
}

/// Records an ack on the delivery's span and in the metrics.
fn settled_ack<T>(ctx: &Ctx<T>, a: &Attempt) {
    ctx.runner.metrics.settled(Settled::Ack, a.started);
    tracing::debug!(target: "tidings", parent: &a.span, subscription = %ctx.runner.key.1, tidings.settle = "ack", "acked");
}

/// The rest of a delivery: wait for a running handler (extending its lease), then settle: ack, dead-letter, or retry
/// after the backoff.
async fn conclude<T: DeserializeOwned + Send + Sync + 'static>(
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
        Begin::Running(fut) => done(with_lease(&ctx, &msg.ack_id, span, received_at, fut).await),
    };
    let failure = match finished {
        Done::Ok => {
            settled_ack(&ctx, &a);
            let _ = ctx.settle.send(Settle::Ack(msg.ack_id));
            return Outcome::Acked;
        }
        Done::DeadLetter(reason) => {
            let class = if reason.starts_with("unrecoverable") {
                span.record("error.type", "unrecoverable");
                DeadReason::Unrecoverable
            } else {
                DeadReason::Poison
            };
            dead_letter(&ctx, &a, class, msg, reason);
            return Outcome::DeadLettered;
        }
        Done::Failed(f) => f,
    };
    let class = if failure.starts_with(PANIC_PREFIX) { DeadReason::Panic } else { DeadReason::HandlerError };
    span.record("error.type", class.as_str());
    if policy.is_exhausted(attempt) {
        dead_letter(&ctx, &a, class, msg, failure);
        return Outcome::DeadLettered;
    }
    ctx.runner.metrics.settled(Settled::Retry, a.started);
    let delay = policy.backoff(attempt);
    tracing::debug!(target: "tidings", parent: span, subscription = %ctx.runner.key.1, id = %msg.id, attempt,
        tidings.settle = "nack", tidings.retry_in = ?delay, error = %failure, "handler failed; will retry");
    if ctx.caps.nack_delay {
        let _ = ctx.settle.send(Settle::Nack(msg.ack_id, delay));
        return Outcome::Retried(delay);
    }
    // The backend cannot delay a nack: hold the message (lease kept alive) for the backoff, without a handler slot.
    drop(permit);
    let cancel = ctx.runner.cancel.clone();
    let _ = with_lease(&ctx, &msg.ack_id, span, received_at, async {
        tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = cancel.cancelled() => {} }
    })
    .await;
    let _ = ctx.settle.send(Settle::Nack(msg.ack_id, Duration::ZERO));
    Outcome::Retried(Duration::ZERO)
}

fn dead_letter<T>(ctx: &Ctx<T>, a: &Attempt, class: DeadReason, message: ReceivedMessage, reason: String) {
    ctx.runner.metrics.settled(Settled::DeadLetter(class), a.started);
    tracing::warn!(target: "tidings", parent: &a.span, subscription = %ctx.runner.key.1, id = %message.id,
        attempt = message.attempt, tidings.settle = "dead_letter", %reason, "dead-lettering message");
    let _ = ctx.settle.send(Settle::DeadLetter(DeadLetterRequest { message, reason }));
}

/// Runs `fut` while extending the delivery's lease every third of the ack deadline, counted from `leased_at` (when
/// the lease began): a lease whose first third passed before the handler started is extended at once, so a delivery
/// that waited for its turn on a busy machine does not expire under a running handler.
async fn with_lease<T, F: Future>(
    ctx: &Ctx<T>,
    ack_id: &AckId,
    span: &Span,
    leased_at: tokio::time::Instant,
    fut: F,
) -> F::Output {
    let deadline = ctx.runner.spec.config.ack_deadline;
    let period = (deadline / 3).max(Duration::from_millis(1));
    let mut next = leased_at + period;
    let mut fut = std::pin::pin!(fut);
    loop {
        // Biased: the work is polled before the lease timer (handlers that finish on their first poll never get here:
        // `begin` polls them once inline).
        tokio::select! {
            biased;
            out = &mut fut => return out,
            _ = tokio::time::sleep_until(next) => {
                tracing::debug!(target: "tidings", parent: span, subscription = %ctx.runner.key.1,
                    tidings.settle = "extend_lease", by = ?deadline, "extending the lease");
                if let Err(e) = ctx.runner.driver.extend_lease(vec![ack_id.clone()], deadline).await {
                    tracing::warn!(subscription = %ctx.runner.key.1, error = %e, "lease extension failed");
                }
                next = tokio::time::Instant::now() + period;
            }
        }
    }
}

async fn settle_loop(
    driver: Arc<dyn SubscriptionDriver>,
    mut rx: mpsc::UnboundedReceiver<Settle>,
    activity: Arc<Activity>,
    metrics: Arc<SubscriptionMetrics>,
) {
    let mut buf = Vec::with_capacity(64);
    while rx.recv_many(&mut buf, SETTLE_BATCH).await > 0 {
        let n = buf.len();
        let (mut acks, mut nacks, mut dead) = (Vec::with_capacity(buf.len()), Vec::new(), Vec::new());
        for s in buf.drain(..) {
            match s {
                Settle::Ack(id) => acks.push(id),
                Settle::Nack(id, d) => nacks.push((id, d)),
                Settle::DeadLetter(r) => dead.push(r),
            }
        }
        let started = metrics.start();
        // Dead letters first: an ordering key blocked behind one unblocks with it.
        if !dead.is_empty() {
            if let Err(e) = driver.dead_letter(dead).await {
                tracing::error!(error = %e, "dead-lettering failed; the messages will be redelivered");
            }
        }
        if !acks.is_empty() {
            if let Err(e) = driver.ack(acks).await {
                tracing::warn!(error = %e, "ack failed; the messages may be redelivered");
            }
        }
        if !nacks.is_empty() {
            if let Err(e) = driver.nack(nacks).await {
                tracing::warn!(error = %e, "nack failed; the messages return after their ack deadline");
            }
        }
        metrics.settle_call(started);
        activity.settled(n);
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
    use std::time::SystemTime;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::backend::TopicSpec;
    use crate::{DeadLetter, MessageId, Result, TopicConfig};

    /// An endless subscription: each receive takes 20 ms and returns `max` messages, or one when `full` is off.
    #[derive(Debug, Default)]
    struct Endless {
        full: bool,
        receiving: AtomicUsize,
        most_receiving: AtomicUsize,
        next: AtomicU64,
    }

    #[async_trait]
    impl SubscriptionDriver for Endless {
        async fn receive(&self, max: usize, _wait: Duration) -> Result<Vec<ReceivedMessage>> {
            let now = self.receiving.fetch_add(1, SeqCst) + 1;
            self.most_receiving.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.receiving.fetch_sub(1, SeqCst);
            let n = if self.full { max } else { 1 };
            Ok((0..n)
                .map(|_| {
                    let i = self.next.fetch_add(1, SeqCst);
                    ReceivedMessage {
                        ack_id: AckId::Num(i),
                        id: MessageId::from(i.to_string()),
                        payload: Bytes::from_static(b"{}"),
                        attributes: Default::default(),
                        ordering_key: None,
                        publish_time: SystemTime::now(),
                        attempt: 1,
                        trace: None,
                    }
                })
                .collect())
        }
        async fn ack(&self, _ids: Vec<AckId>) -> Result<()> {
            Ok(())
        }
        async fn nack(&self, _items: Vec<(AckId, Duration)>) -> Result<()> {
            Ok(())
        }
        async fn extend_lease(&self, _ids: Vec<AckId>, _by: Duration) -> Result<()> {
            Ok(())
        }
        async fn dead_letter(&self, _items: Vec<DeadLetterRequest>) -> Result<()> {
            Ok(())
        }
        async fn dead_letters(&self, _max: usize) -> Result<Vec<DeadLetter>> {
            Ok(Vec::new())
        }
        async fn redrive(&self, _ids: Option<Vec<MessageId>>) -> Result<usize> {
            Ok(0)
        }
    }

    /// Runs `driver` with 4 concurrent receives allowed and 30 handler slots (handlers take 50 ms) until 600 messages
    /// were handled; returns (most receives in flight, most handlers running).
    async fn run(driver: Arc<Endless>) -> (usize, usize) {
        let caps = Capabilities { concurrent_receives: 4, ..Capabilities::default() };
        let topic = TopicSpec::new("t", "t", TopicConfig::at_least_once());
        let config = crate::SubscriptionConfig::default().with_max_concurrency(30);
        let spec = SubscriptionSpec::new(topic, "s", "s", config);
        let (running, most, handled) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, m, h) = (running.clone(), most.clone(), handled.clone());
        let handler = move |_m: Message<serde_json::Value>| {
            let (r, m, h) = (r.clone(), m.clone(), h.clone());
            async move {
                m.fetch_max(r.fetch_add(1, SeqCst) + 1, SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                r.fetch_sub(1, SeqCst);
                h.fetch_add(1, SeqCst);
                Ok(())
            }
        };
        let runner = start("test", ("t".into(), "s".into()), spec, driver.clone(), caps, handler);
        while handled.load(SeqCst) < 600 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        runner.wait(Duration::from_secs(5)).await;
        (driver.most_receiving.load(SeqCst), most.load(SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn full_batches_bring_more_receives_in_flight_within_the_handler_slots() {
        let (receives, handlers) = run(Arc::new(Endless { full: true, ..Default::default() })).await;
        assert!(receives > 1 && receives <= 4, "{receives} receives in flight");
        assert!(handlers <= 30, "{handlers} handlers ran at once, above max_concurrency 30");
    }

    #[tokio::test(start_paused = true)]
    async fn partial_batches_keep_one_receive_in_flight() {
        let (receives, _) = run(Arc::new(Endless { full: false, ..Default::default() })).await;
        assert_eq!(receives, 1);
    }
}
