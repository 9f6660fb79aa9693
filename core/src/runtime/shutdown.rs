//! Stopping running subscriptions within one deadline: handlers get the timeout, then are dropped; the driver's close
//! (an open long poll or pull, the last settlements) gets what is left of the timeout plus [`CLOSE_GRACE`], and then
//! finishes in the background. So a shutdown returns within its timeout plus [`Bus::SHUTDOWN_MARGIN`], however many
//! subscriptions it stops and whatever the backend has in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use super::Runner;
use crate::Bus;

/// How long past the deadline the runtime waits for a subscription's driver to close (and for its handlers, once
/// aborted, to be dropped) before it returns and leaves the close to finish in the background.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

impl Bus {
    /// How long past its timeout [`Bus::shutdown`] (and [`crate::Subscription::shutdown`]) may take: 2 s. The runtime
    /// waits at most 1 s past the timeout (for aborted handlers to be dropped and the backend to settle and close what
    /// it has in flight, such as an SQS long poll); the other second is for a loaded machine to schedule the tasks
    /// involved. What is still closing then finishes in the background while the process runs.
    pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);
}

/// Stops every runner together: one deadline for all, `timeout` from now.
pub(crate) async fn stop_all(runners: &[Arc<Runner>], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for r in runners {
        r.cancel();
    }
    futures_util::future::join_all(runners.iter().map(|r| r.wait_until(deadline))).await;
}

impl Runner {
    /// Waits for in-flight handlers up to `timeout`, then aborts the rest (their messages stay unacked).
    pub(crate) async fn wait(&self, timeout: Duration) {
        self.wait_until(Instant::now() + timeout).await;
    }

    /// Waits for in-flight handlers until `deadline`, then aborts the rest (their messages stay unacked); waits for
    /// the driver to close until [`CLOSE_GRACE`] after it.
    pub(crate) async fn wait_until(&self, deadline: Instant) {
        self.cancel.cancel();
        let end = deadline + CLOSE_GRACE;
        let rx = self.done.lock().unwrap().take();
        let Some(mut rx) = rx else {
            // Another caller is stopping it: wait for that, within this caller's own bound.
            let notified = self.finished.notified();
            if !self.is_stopped() {
                let _ = timeout_at(end, notified).await;
            }
            return;
        };
        if timeout_at(deadline, self.drained.cancelled()).await.is_err() {
            tracing::warn!(subscription = %self.key.1, topic = %self.key.0,
                "shutdown timeout reached; aborting in-flight handlers, their messages stay unacked");
            self.abort.cancel();
        }
        // At the deadline settlements stop retrying too: each one left gets one more attempt.
        let closed = match timeout_at(deadline, &mut rx).await {
            Ok(_) => true,
            Err(_) => {
                self.abort.cancel();
                timeout_at(end, &mut rx).await.is_ok()
            }
        };
        if !closed {
            tracing::info!(subscription = %self.key.1, topic = %self.key.0, grace = ?CLOSE_GRACE,
                "the backend is still closing this subscription (a receive still open at the broker, or settlements); \
                 shutdown returns and the close finishes in the background");
        }
        // Stopped for the application even while a close finishes in the background: the name can be subscribed
        // again (a new driver receives beside the old one's last poll, whose deliveries it releases).
        self.stopped.store(true, std::sync::atomic::Ordering::Release);
        self.finished.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::SystemTime;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::backend::{
        AckId, Capabilities, DeadLetterRequest, ReceivedMessage, SubscriptionDriver, SubscriptionSpec, TopicSpec,
    };
    use crate::{Message, MessageId, Result, TopicConfig};

    /// Hands out one message per receive until `messages` ran out, then holds every receive for `poll` (a long poll);
    /// its close waits for `close` (an open poll the broker will not cut).
    #[derive(Debug)]
    struct Slow {
        messages: AtomicUsize,
        poll: Duration,
        close: Duration,
        acked: AtomicUsize,
    }

    #[async_trait]
    impl SubscriptionDriver for Slow {
        async fn receive(&self, _max: usize, _wait: Duration) -> Result<Vec<ReceivedMessage>> {
            if self.messages.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_err() {
                tokio::time::sleep(self.poll).await;
                return Ok(Vec::new());
            }
            let m = ReceivedMessage::new(
                AckId::Num(0),
                MessageId::from("m"),
                Bytes::from_static(b"{}"),
                SystemTime::now(),
                1,
            );
            Ok(vec![m])
        }
        async fn close(&self) -> Result<()> {
            tokio::time::sleep(self.close).await;
            Ok(())
        }
        async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
            self.acked.fetch_add(ids.len(), SeqCst);
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

    /// A runner whose `messages` handlers never finish, whose receives poll for 20 s and whose close takes `close`.
    fn runner(name: &str, messages: usize, close: Duration) -> (Arc<Runner>, Arc<Slow>, Arc<AtomicUsize>) {
        let driver = Arc::new(Slow {
            messages: AtomicUsize::new(messages),
            poll: Duration::from_secs(20),
            close,
            acked: 0.into(),
        });
        let spec = SubscriptionSpec::new(
            TopicSpec::new("t", "t", TopicConfig::at_least_once()),
            name,
            name,
            Default::default(),
        );
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let handler = move |_m: Message<serde_json::Value>| {
            s.fetch_add(1, SeqCst);
            std::future::pending::<crate::HandlerResult>()
        };
        let key = ("t".to_string(), name.to_string());
        (
            super::super::start(
                &crate::backend::BackendInfo::new("test"),
                key,
                spec,
                driver.clone(),
                Capabilities::default(),
                handler,
            ),
            driver,
            started,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn several_subscriptions_stop_within_one_timeout_plus_the_grace() {
        // Three with handlers busy forever and a close that waits out a 20 s poll, one idle in its 20 s poll.
        let mut all = Vec::new();
        let mut started = Vec::new();
        for (i, n) in [2, 2, 2, 0].into_iter().enumerate() {
            let (r, d, s) = runner(&format!("s{i}"), n, Duration::from_secs(20));
            all.push((r, d));
            started.push((s, n));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(started.iter().all(|(s, n)| s.load(SeqCst) == *n), "every handler started");
        let runners: Vec<_> = all.iter().map(|(r, _)| r.clone()).collect();
        let begun = Instant::now();
        stop_all(&runners, Duration::from_secs(10)).await;
        // Time is paused: the measure is exact. Before, each subscription took its own timeout, then its close.
        assert_eq!(begun.elapsed(), Duration::from_secs(10) + CLOSE_GRACE);
        assert!(CLOSE_GRACE < Bus::SHUTDOWN_MARGIN);
        assert!(all.iter().all(|(_, d)| d.acked.load(SeqCst) == 0), "unfinished messages stay unacked");
        assert!(runners.iter().all(|r| r.is_stopped()), "stopped for the application, the closes run on");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_close_ends_the_shutdown_when_the_handlers_are_done() {
        let (r, _, _) = runner("idle", 0, Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let begun = Instant::now();
        r.wait(Duration::from_secs(10)).await;
        assert_eq!(begun.elapsed(), Duration::from_millis(300), "no handler to wait for: the close alone");
        assert!(r.is_stopped());
        // A second caller returns at once.
        let again = Instant::now();
        r.wait(Duration::from_secs(10)).await;
        assert_eq!(again.elapsed(), Duration::ZERO);
    }
}
