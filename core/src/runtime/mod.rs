//! The runtime that runs one subscription's handlers, written once for every backend: receive sized to free
//! handler slots ([`receive`]), decode and dispatch with panic isolation and lease extension ([`deliver`]), backoff,
//! attempt counting, dead-letter decisions and batched settlement ([`settle`]), graceful shutdown ([`shutdown`]),
//! per-key head-of-line blocking on ordered topics whose backend lacks native ordering ([`sequence`]), and batch
//! handlers: batches gathered from receives and run with every message settled on its own ([`batch`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backend::{Capabilities, ReceivedMessage, SubscriptionDriver, SubscriptionSpec};
use crate::handler::{BatchHandler, Handler};
use crate::metrics::{Started, SubscriptionMetrics};
use tracing::Span;

mod batch;
mod delay;
mod deliver;
mod handle;
mod receive;
mod refresh;
mod sequence;
#[cfg(test)]
mod sequence_tests;
mod settle;
mod shutdown;
pub use handle::Subscription;
pub(crate) use shutdown::stop_all;

/// Shared state of one running subscription.
pub(crate) struct Runner {
    pub(crate) key: (String, String),
    pub(crate) spec: SubscriptionSpec,
    pub(crate) driver: Arc<dyn SubscriptionDriver>,
    cancel: CancellationToken,
    /// The handlers' view of `cancel` ([`Message::shutdown_requested`]): one shared pointer per message.
    shutdown_signal: Arc<CancellationToken>,
    /// Cancelled at the shutdown's deadline: handlers still running are dropped, and settlements stop retrying.
    abort: CancellationToken,
    /// Cancelled once no handler runs any more (they finished, or the shutdown timeout aborted them).
    drained: CancellationToken,
    /// Most settlements per driver call ([`Capabilities::max_settle_batch`], at least 1).
    settle_batch: usize,
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
    /// Extends the lease of these deliveries to `by` from now, in calls of at most `max_settle_batch`, retried as settle
    /// calls are; returns the last error.
    pub(super) async fn extend(&self, ids: Vec<crate::backend::AckId>, by: Duration) -> crate::Result<()> {
        let mut result = Ok(());
        for chunk in ids.chunks(self.settle_batch) {
            let call = || self.driver.extend_lease(chunk.to_vec(), by);
            if let Err(e) = crate::retry::call("extend_lease", Some(&self.abort), call).await {
                result = Err(e);
            }
        }
        result
    }

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

/// What a subscription's handler takes: one message a call, or a batch.
pub(crate) enum Handling<T> {
    One(Box<dyn Handler<T>>),
    Batch {
        handler: Box<dyn BatchHandler<T>>,
        /// Deliveries for the batch being gathered that come from neither a receive nor the sequencer's ready list:
        /// a key's next message once its batch is done, a held delivery now due. With when their lease last began.
        gather: mpsc::UnboundedSender<(ReceivedMessage, tokio::time::Instant)>,
    },
}

impl<T> Handling<T> {
    /// The single handler (deliveries of a batch subscription never reach the single-message path).
    fn one(&self) -> &dyn Handler<T> {
        match self {
            Handling::One(h) => &**h,
            Handling::Batch { .. } => unreachable!("a batch subscription's deliveries run as batches"),
        }
    }
}

struct Ctx<T> {
    runner: Arc<Runner>,
    caps: Capabilities,
    handler: Handling<T>,
    settle: mpsc::UnboundedSender<settle::Settle>,
    /// One message per ordering key out at a time: on ordered topics whose backend lacks native ordering.
    seq: Option<Arc<sequence::Sequencer>>,
    /// `messaging.system` of the process spans.
    system: String,
    /// `otel.name` of the process spans: `process <subscription>`.
    span_name: String,
    /// Handler slots (`max_concurrency`): a receive takes one per message it asks for; a batch takes one.
    slots: Arc<tokio::sync::Semaphore>,
    /// Deliveries held in process until their due time.
    delays: delay::Delays,
}

/// One delivery attempt: its span, and when its handler started (for the metrics).
struct Attempt {
    span: Span,
    started: Started,
}

/// Starts a subscription whose handler takes one message a call.
pub(crate) fn start<T, H>(
    info: &crate::backend::BackendInfo,
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
    launch(info, key, spec, driver, caps, Handling::One(Box::new(handler)), None)
}

/// Starts a subscription whose handler takes batches (`spec.config.max_messages`, `max_wait`).
pub(crate) fn start_batch<T, H>(
    info: &crate::backend::BackendInfo,
    key: (String, String),
    spec: SubscriptionSpec,
    driver: Arc<dyn SubscriptionDriver>,
    caps: Capabilities,
    handler: H,
) -> Arc<Runner>
where
    T: DeserializeOwned + Send + Sync + 'static,
    H: BatchHandler<T>,
{
    let (gather, gathered) = mpsc::unbounded_channel();
    let handling = Handling::Batch { handler: Box::new(handler), gather };
    launch(info, key, spec, driver, caps, handling, Some(gathered))
}

fn launch<T>(
    info: &crate::backend::BackendInfo,
    key: (String, String),
    spec: SubscriptionSpec,
    driver: Arc<dyn SubscriptionDriver>,
    caps: Capabilities,
    handler: Handling<T>,
    gathered: Option<batch::Gathered>,
) -> Arc<Runner>
where
    T: DeserializeOwned + Send + Sync + 'static,
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
        settle_batch: caps.max_settle_batch.max(1),
        stopped: AtomicBool::new(false),
        done: Mutex::new(Some(done_rx)),
        finished: tokio::sync::Notify::new(),
        activity: Arc::new(Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last_received: Mutex::new(tokio::time::Instant::now()),
        }),
        metrics: Arc::new(SubscriptionMetrics::new(&info.name, &spec_topic, &spec_name)),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let settler = tokio::spawn(settle::settle_loop(runner.clone(), rx));
    let system = info.consumer_system.to_string();
    let span_name = format!("process {}", runner.spec.name);
    let seq = (runner.spec.topic.config.ordered && !caps.ordering).then(|| {
        let limit = sequence::parked_limit(runner.spec.max_in_flight());
        Arc::new(sequence::Sequencer::new(runner.spec.config.ack_deadline).with_limit(limit))
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(runner.spec.config.max_concurrency));
    let delays = delay::Delays::default();
    let ctx =
        Arc::new(Ctx { runner: runner.clone(), caps, handler, settle: tx, seq, system, span_name, slots, delays });
    tokio::spawn(async move {
        receive::receive_loop(ctx.clone(), gathered).await;
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

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
    use std::time::SystemTime;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::backend::{AckId, DeadLetterRequest, ReceivedMessage, TopicSpec};
    use crate::message::Message;
    use crate::{MessageId, Result, TopicConfig};

    /// An endless subscription: each receive takes 20 ms and returns `max` messages, or one when `full` is off; with
    /// a `limit`, it runs dry after that many messages (a receive then waits out its wait).
    #[derive(Debug, Default)]
    pub(super) struct Endless {
        full: bool,
        limit: Option<u64>,
        receiving: AtomicUsize,
        most_receiving: AtomicUsize,
        receives: AtomicU64,
        next: AtomicU64,
    }

    impl Endless {
        pub(super) fn new(full: bool, limit: Option<u64>) -> Self {
            Self { full, limit, ..Self::default() }
        }
        pub(super) fn receives(&self) -> u64 {
            self.receives.load(SeqCst)
        }
    }

    #[async_trait]
    impl SubscriptionDriver for Endless {
        async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
            self.receives.fetch_add(1, SeqCst);
            let now = self.receiving.fetch_add(1, SeqCst) + 1;
            self.most_receiving.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.receiving.fetch_sub(1, SeqCst);
            let left = self.limit.map_or(u64::MAX, |l| l.saturating_sub(self.next.load(SeqCst)));
            if left == 0 {
                tokio::time::sleep(wait).await;
                return Ok(Vec::new());
            }
            let n = (if self.full { max } else { 1 }).min(left as usize);
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
                        sequence: None,
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
        let runner = start(
            &crate::backend::BackendInfo::new("test"),
            ("t".into(), "s".into()),
            spec,
            driver.clone(),
            caps,
            handler,
        );
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

#[cfg(test)]
mod batch_tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Mutex;

    use super::tests::Endless;
    use super::*;
    use crate::backend::TopicSpec;
    use crate::handler::BatchOutcome;
    use crate::message::Message;
    use crate::TopicConfig;

    /// Runs a batch subscription (`max_messages` 10, `max_wait` 1 s, 3 batches at once, each taking 100 ms) on
    /// `driver` (receives of at most 4) until 120 messages were handled; returns the batch sizes, the most batches
    /// running at once, and the receives made.
    async fn run(driver: Arc<Endless>) -> (Vec<usize>, usize, u64) {
        let caps = Capabilities { max_receive_batch: 4, concurrent_receives: 2, ..Capabilities::default() };
        let topic = TopicSpec::new("t", "t", TopicConfig::at_least_once());
        let config = crate::SubscriptionConfig::default()
            .with_max_concurrency(3)
            .with_max_messages(10)
            .with_max_wait(Duration::from_secs(1));
        let spec = SubscriptionSpec::new(topic, "s", "s", config).with_batch(true);
        let (sizes, running, most) =
            (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, r, m) = (sizes.clone(), running.clone(), most.clone());
        let handler = move |batch: Vec<Message<serde_json::Value>>| {
            let (s, r, m) = (s.clone(), r.clone(), m.clone());
            async move {
                m.fetch_max(r.fetch_add(1, SeqCst) + 1, SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                r.fetch_sub(1, SeqCst);
                s.lock().unwrap().push(batch.len());
                Ok(BatchOutcome::AckAll)
            }
        };
        let info = crate::backend::BackendInfo::new("test");
        let runner = start_batch(&info, ("t".into(), "s".into()), spec, driver.clone(), caps, handler);
        while sizes.lock().unwrap().iter().sum::<usize>() < 120 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        runner.wait(Duration::from_secs(5)).await;
        let sizes = sizes.lock().unwrap().clone();
        (sizes, most.load(SeqCst), driver.receives())
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_gathered_from_several_receives_and_max_concurrency_counts_batches() {
        let (sizes, most, receives) = run(Arc::new(Endless::new(true, None))).await;
        assert!(sizes.iter().all(|&n| n == 10), "full batches of max_messages from receives of 4: {sizes:?}");
        assert_eq!(most, 3, "3 batches (30 messages) at once with max_concurrency 3");
        // Each batch of 10 takes receives of 4, 4 and 2 (the room left): 3 per batch, and up to 3 more for the batch
        // being gathered when the subscription stopped.
        let n = sizes.len() as u64;
        assert!(receives >= 3 * n && receives <= 3 * n + 3, "{receives} receives for {n} batches");
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_leaves_after_max_wait() {
        // One message per receive, 20 ms each: 10 arrive within 200 ms, so batches still fill before max_wait.
        let (sizes, _, _) = run(Arc::new(Endless::new(false, None))).await;
        assert!(sizes.iter().all(|&n| n == 10), "{sizes:?}");
        // A driver that runs dry: 3 messages, then nothing; the batch of 3 leaves max_wait after the first arrived.
        let caps = Capabilities { max_receive_batch: 4, ..Capabilities::default() };
        let topic = TopicSpec::new("t", "t", TopicConfig::at_least_once());
        let config = crate::SubscriptionConfig::default().with_max_messages(10).with_max_wait(Duration::from_secs(1));
        let spec = SubscriptionSpec::new(topic, "s", "s", config).with_batch(true);
        let driver = Arc::new(Endless::new(false, Some(3)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let started = tokio::time::Instant::now();
        let handler = move |batch: Vec<Message<serde_json::Value>>| {
            s.lock().unwrap().push((batch.len(), started.elapsed()));
            std::future::ready(Ok(BatchOutcome::AckAll))
        };
        let info = crate::backend::BackendInfo::new("test");
        let runner = start_batch(&info, ("t".into(), "s".into()), spec, driver, caps, handler);
        tokio::time::sleep(Duration::from_secs(3)).await;
        runner.wait(Duration::from_secs(5)).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let (n, at) = seen[0];
        // The first message arrived after one receive (20 ms); the batch left 1 s later.
        assert_eq!((n, at), (3, Duration::from_millis(1020)));
    }
}
