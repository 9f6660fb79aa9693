//! The settle route retries what drivers do not: a settle call or lease extension that fails retryably is made again
//! with backoff (each attempt one driver call), one that fails for good is not, and the retries end at the shutdown's
//! deadline. The receive loop retries failed receives on its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use crate::backend::{
    AckId, BackendInfo, Capabilities, DeadLetterRequest, ReceivedMessage, SubscriptionDriver, SubscriptionSpec,
    TopicSpec,
};
use crate::handler::HandlerError;
use crate::{Error, HandlerResult, Message, MessageId, Result, SubscriptionConfig, TopicConfig};

/// A driver whose calls fail as planned: per operation, how many of its first calls fail and whether retryably.
/// Its first receives fail as planned too, then they hand out its messages (at most `max` each), then each receive
/// waits 1 s for none.
#[derive(Debug, Default)]
struct Flaky {
    messages: Mutex<Vec<ReceivedMessage>>,
    /// Operation -> (calls left to fail, retryable).
    plan: Mutex<HashMap<&'static str, (usize, bool)>>,
    /// Operation -> calls made (each failed or not).
    calls: Mutex<HashMap<&'static str, usize>>,
    /// Operation -> calls that failed.
    failed: Mutex<HashMap<&'static str, usize>>,
    /// Deliveries settled by a successful call, per operation.
    settled: Mutex<HashMap<&'static str, usize>>,
    /// Size of each call, per operation.
    sizes: Mutex<HashMap<&'static str, Vec<usize>>>,
}

impl Flaky {
    fn new(messages: usize, plan: &[(&'static str, usize, bool)]) -> Arc<Self> {
        let msgs = (0..messages)
            .map(|i| {
                let id = MessageId::from(format!("m{i}"));
                ReceivedMessage::new(AckId::Num(i as u64), id, Bytes::from_static(b"{}"), SystemTime::now(), 1)
            })
            .collect();
        let plan = plan.iter().map(|&(op, n, retryable)| (op, (n, retryable))).collect();
        Arc::new(Self { messages: Mutex::new(msgs), plan: Mutex::new(plan), ..Default::default() })
    }

    /// One call of `op` settling `n` deliveries: fails if the plan says so.
    fn call(&self, op: &'static str, n: usize) -> Result<()> {
        *self.calls.lock().unwrap().entry(op).or_default() += 1;
        self.sizes.lock().unwrap().entry(op).or_default().push(n);
        if let Some((left, retryable)) = self.plan.lock().unwrap().get_mut(op) {
            if *left > 0 {
                *left -= 1;
                *self.failed.lock().unwrap().entry(op).or_default() += 1;
                return Err(Error::backend(format!("{op} failed (injected)"), *retryable));
            }
        }
        *self.settled.lock().unwrap().entry(op).or_default() += n;
        Ok(())
    }

    fn calls(&self, op: &str) -> usize {
        self.calls.lock().unwrap().get(op).copied().unwrap_or(0)
    }

    fn failed(&self, op: &str) -> usize {
        self.failed.lock().unwrap().get(op).copied().unwrap_or(0)
    }

    fn settled(&self, op: &str) -> usize {
        self.settled.lock().unwrap().get(op).copied().unwrap_or(0)
    }
}

#[async_trait]
impl SubscriptionDriver for Flaky {
    async fn receive(&self, max: usize, _wait: Duration) -> Result<Vec<ReceivedMessage>> {
        self.call("receive", 0)?;
        let msgs: Vec<_> = {
            let mut left = self.messages.lock().unwrap();
            let n = max.min(left.len());
            left.drain(..n).collect()
        };
        if msgs.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(msgs)
    }
    async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
        self.call("ack", ids.len())
    }
    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()> {
        self.call("nack", items.len())
    }
    async fn extend_lease(&self, ids: Vec<AckId>, _by: Duration) -> Result<()> {
        self.call("extend_lease", ids.len())
    }
    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()> {
        self.call("dead_letter", items.len())
    }
}

/// Runs `driver` with `handler` (an ack deadline of 3 s, delayed nacks) and returns the runner and the handler runs.
fn run<F, Fut>(driver: Arc<Flaky>, config: SubscriptionConfig, handler: F) -> (Arc<super::Runner>, Arc<AtomicUsize>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = HandlerResult> + Send + 'static,
{
    run_with(Capabilities { nack_delay: true, ..Capabilities::default() }, driver, config, handler)
}

/// [`run`] with these capabilities.
fn run_with<F, Fut>(
    caps: Capabilities,
    driver: Arc<Flaky>,
    config: SubscriptionConfig,
    handler: F,
) -> (Arc<super::Runner>, Arc<AtomicUsize>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = HandlerResult> + Send + 'static,
{
    let spec = SubscriptionSpec::new(
        TopicSpec::new("t", "t", TopicConfig::at_least_once()),
        "s",
        "s",
        config.with_ack_deadline(Duration::from_secs(3)),
    );
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let handler = move |_m: Message<serde_json::Value>| {
        r.fetch_add(1, SeqCst);
        handler()
    };
    let runner = super::super::start(&BackendInfo::new("test"), ("t".into(), "s".into()), spec, driver, caps, handler);
    (runner, runs)
}

/// Waits (in paused time) until `done`, for at most 60 s.
async fn until(done: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < end, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_transient_ack_failure_is_retried_so_nothing_is_redelivered() {
    // The first two ack calls fail: the settle route makes a third, and every message is acked once.
    let driver = Flaky::new(20, &[("ack", 2, true)]);
    let (runner, runs) = run(driver.clone(), SubscriptionConfig::default(), || async { Ok(()) });
    until(|| driver.settled("ack") == 20).await;
    runner.wait(Duration::from_secs(5)).await;
    assert_eq!(runs.load(SeqCst), 20, "each handler ran once");
    assert_eq!(driver.settled("ack"), 20, "every message acked, none twice");
    assert_eq!(driver.calls("nack"), 0, "nothing went back for redelivery");
    assert_eq!(driver.failed("ack"), 2);
}

#[tokio::test(start_paused = true)]
async fn nack_dead_letter_and_lease_extension_are_retried_too() {
    for (op, config, handler) in [
        ("nack", SubscriptionConfig::default(), 0),
        ("dead_letter", SubscriptionConfig::default().with_max_retries(0), 0),
        ("extend_lease", SubscriptionConfig::default(), 1),
    ] {
        let driver = Flaky::new(1, &[(op, 2, true)]);
        let (runner, _) = run(driver.clone(), config, move || async move {
            if handler == 0 {
                return Err(HandlerError::retry("fails (injected)"));
            }
            tokio::time::sleep(Duration::from_millis(1900)).await; // past a third of the 3 s ack deadline, once
            Ok(())
        });
        until(|| driver.settled(op) == 1).await;
        runner.wait(Duration::from_secs(5)).await;
        assert_eq!(driver.calls(op), 3, "{op}: 2 failed attempts, then 1 that succeeded");
    }
}

#[tokio::test(start_paused = true)]
async fn an_ack_that_fails_for_good_is_not_retried() {
    let driver = Flaky::new(1, &[("ack", 1, false)]);
    let (runner, runs) = run(driver.clone(), SubscriptionConfig::default(), || async { Ok(()) });
    until(|| driver.calls("ack") == 1).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    runner.wait(Duration::from_secs(5)).await;
    assert_eq!((runs.load(SeqCst), driver.calls("ack"), driver.settled("ack")), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn an_ack_failing_retryably_gives_up_after_4_attempts() {
    let driver = Flaky::new(1, &[("ack", usize::MAX, true)]);
    let (runner, _) = run(driver.clone(), SubscriptionConfig::default(), || async { Ok(()) });
    tokio::time::sleep(Duration::from_secs(10)).await;
    runner.wait(Duration::from_secs(5)).await;
    assert_eq!(driver.calls("ack"), crate::retry::CALL_ATTEMPTS as usize);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_ends_settle_retries_at_its_deadline() {
    // Every dead-letter call fails retryably: its retries (100 + 200 + 400 ms, jittered) would outlast the timeout.
    let driver = Flaky::new(1, &[("dead_letter", usize::MAX, true)]);
    let config = SubscriptionConfig::default().with_max_retries(0);
    let (runner, _) = run(driver.clone(), config, || async { Err(HandlerError::retry("fails (injected)")) });
    until(|| driver.calls("dead_letter") == 1).await;
    let begun = Instant::now();
    runner.wait(Duration::from_millis(30)).await;
    assert_eq!(begun.elapsed(), Duration::from_millis(30), "the shutdown returned at its deadline");
    assert!(runner.is_stopped());
    assert!(driver.calls("dead_letter") < crate::retry::CALL_ATTEMPTS as usize, "retries ended at the deadline");
}

#[tokio::test(start_paused = true)]
async fn failed_receives_are_retried_with_backoff_until_one_succeeds() {
    let driver = Flaky::new(3, &[("receive", 4, true)]);
    let started = Instant::now();
    let (runner, runs) = run(driver.clone(), SubscriptionConfig::default(), || async { Ok(()) });
    until(|| driver.settled("ack") == 3).await;
    // Backoffs of 100, 200, 400 and 800 ms, each jittered by [0.5, 1.5): at least 750 ms before the fifth receive.
    assert!(started.elapsed() >= Duration::from_millis(750), "{:?}", started.elapsed());
    assert_eq!(driver.failed("receive"), 4);
    assert!(driver.calls("receive") >= 5);
    runner.wait(Duration::from_secs(5)).await;
    assert_eq!(runs.load(SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn settlements_go_to_the_driver_in_calls_of_at_most_max_settle_batch() {
    // 45 messages in one receive: 45 acks (fast path, in groups of 16) or 45 nacks (through the settle loop), with a
    // limit of 10 per call.
    let caps =
        Capabilities { nack_delay: true, max_settle_batch: 10, max_receive_batch: 45, ..Capabilities::default() };
    let config = SubscriptionConfig::default().with_max_concurrency(45);
    for (op, outcome) in [("ack", Ok(())), ("nack", Err(()))] {
        let driver = Flaky::new(45, &[]);
        let (runner, _) = run_with(caps.clone(), driver.clone(), config, move || async move {
            outcome.map_err(|()| HandlerError::retry("fails (injected)"))
        });
        until(|| driver.settled(op) == 45).await;
        runner.wait(Duration::from_secs(5)).await;
        let sizes = driver.sizes.lock().unwrap()[op].clone();
        assert!(sizes.iter().all(|&n| (1..=10).contains(&n)), "{op} call sizes {sizes:?}");
        assert!(sizes.contains(&10), "{op}: larger settlements were split into calls of 10: {sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 45);
    }
}
