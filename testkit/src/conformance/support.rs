//! Helpers shared by the conformance cases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use tidings_core::{Bus, Message, Metadata, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};

use super::Timing;

/// The payload used by the suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number.
    pub n: u64,
    /// Free text.
    pub text: String,
}

impl Event {
    pub(crate) fn new(n: u64) -> Self {
        Event { n, text: format!("event {n}") }
    }
}

/// A topic with a unique name, so tests never share broker state.
pub(crate) fn topic<T>(base: &str, config: TopicConfig) -> Topic<T> {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name: &'static str = Box::leak(format!("{base}-{}", &id[id.len() - 12..]).into_boxed_str());
    Topic::new(name, config)
}

/// Subscription config on the harness's time scale, with `max_retries` retries.
pub(crate) fn sub_config(t: &Timing, max_retries: u32) -> SubscriptionConfig {
    SubscriptionConfig::DEFAULT
        .with_ack_deadline(t.ack_deadline)
        .with_max_concurrency(10)
        .with_retry(RetryPolicy::new(t.min_backoff, t.max_backoff).with_max_retries(max_retries))
}

/// One delivery as a handler saw it.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub event: Event,
    pub meta: Metadata,
    pub at: Instant,
    /// The wall clock when the handler ran (delayed delivery compares it with due times).
    pub wall: std::time::SystemTime,
}

/// Thread-safe log of deliveries.
#[derive(Clone, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<Delivery>>>);

impl Log {
    pub fn record(&self, msg: &tidings_core::Message<Event>) {
        self.0.lock().unwrap().push(Delivery {
            event: msg.payload.clone(),
            meta: msg.meta.clone(),
            at: Instant::now(),
            wall: std::time::SystemTime::now(),
        });
    }
    pub fn all(&self) -> Vec<Delivery> {
        self.0.lock().unwrap().clone()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// Waits until at least `n` deliveries were logged (or patience runs out) and returns them.
    pub async fn wait_for(&self, n: usize, patience: Duration) -> Vec<Delivery> {
        wait_until(patience, || self.len() >= n).await;
        self.all()
    }
}

/// Polls `cond` every 10 ms until it holds or `patience` passes; returns whether it held.
pub(crate) async fn wait_until(patience: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + patience;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads the DLQ until it holds `n` entries or patience runs out.
pub(crate) async fn wait_dead_letters(
    sub: &tidings_core::Subscription,
    n: usize,
    patience: Duration,
) -> Vec<tidings_core::DeadLetter> {
    let end = Instant::now() + patience;
    loop {
        let d = sub.dead_letters(100).await.expect("read DLQ");
        if d.len() >= n || Instant::now() >= end {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails a capability-gated case that runs on a backend lacking the capability: its harness must declare the
/// capability missing (`lacks: [...]` in [`conformance_tests!`](crate::conformance_tests)), so the case is reported
/// as ignored (skipped), by name, instead of passing.
pub(crate) fn require(bus: &Bus, has: bool, test: &str, capability: &str) {
    assert!(
        has,
        "conformance::{}::{test} needs the `{capability}` capability, which this backend lacks: declare it with \
         `lacks: [{capability}]` in conformance_tests! so the case is reported as skipped",
        bus.backend_name()
    );
}

/// A handler that logs each delivery and acks it.
pub(crate) fn logging(
    log: &Log,
) -> impl Fn(Message<Event>) -> std::future::Ready<tidings_core::HandlerResult> + Send + Sync + 'static {
    let log = log.clone();
    move |m| {
        log.record(&m);
        std::future::ready(Ok(()))
    }
}
