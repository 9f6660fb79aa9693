//! The handle of a running subscription.

use std::sync::Arc;
use std::time::Duration;

use crate::dead_letter::{self, Move, Pace};
use crate::error::{Error, Result};
use crate::subscription::SubscriptionConfig;

use super::Runner;

/// A running subscription, returned by [`crate::Bus::subscribe`]. Dropping it leaves the subscription running until
/// [`crate::Bus::shutdown`]; [`Subscription::shutdown`] stops just this one.
#[derive(Clone)]
pub struct Subscription {
    runner: Arc<Runner>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("topic", &self.runner.key.0).field("name", &self.runner.key.1).finish()
    }
}

impl Subscription {
    pub(crate) fn new(runner: Arc<Runner>) -> Self {
        Self { runner }
    }

    /// The subscription's logical name.
    pub fn name(&self) -> &str {
        &self.runner.key.1
    }

    /// The effective settings (code, then config overrides).
    pub fn config(&self) -> &SubscriptionConfig {
        &self.runner.spec.config
    }

    /// The subscription's dead-letter queue, through its backend's one dead-letter surface.
    fn queue(&self) -> Result<Arc<dyn crate::dead_letter::DeadLetters>> {
        self.runner.driver.clone().dead_letter_queue().ok_or_else(|| {
            Error::new(crate::ErrorKind::Unsupported, "this backend offers no dead-letter queue for the subscription")
        })
    }

    /// Reads up to `max` messages from the dead-letter queue without removing them, oldest first.
    pub async fn dead_letters(&self, max: usize) -> Result<Vec<crate::DeadLetter>> {
        dead_letter::peek(&*self.queue()?, max).await
    }

    /// Moves every dead letter back into the subscription, attempt counter reset; returns how many moved.
    pub async fn redrive_all(&self) -> Result<usize> {
        let n = dead_letter::sweep(&*self.queue()?, &|_| true, &Pace::unlimited(), Move::Restore).await? as usize;
        self.runner.metrics.redriven(n);
        Ok(n)
    }

    /// Moves the dead letters with these ids back into the subscription; returns how many moved.
    pub async fn redrive(&self, ids: &[crate::MessageId]) -> Result<usize> {
        let select = |d: &crate::DeadLetter| ids.contains(&d.id);
        let n = dead_letter::sweep(&*self.queue()?, &select, &Pace::unlimited(), Move::Restore).await? as usize;
        self.runner.metrics.redriven(n);
        Ok(n)
    }

    /// Messages not yet acked or dead-lettered, where the backend can tell.
    pub async fn backlog(&self) -> Result<Option<u64>> {
        crate::retry::call("backlog", None, || self.runner.driver.backlog()).await
    }

    /// The backlog with its scheduled messages (published with a due time not reached yet) apart, where the backend
    /// can tell: see [`crate::BacklogDetail`].
    pub async fn backlog_detail(&self) -> Result<crate::BacklogDetail> {
        crate::retry::call("backlog", None, || self.runner.driver.backlog_detail()).await
    }

    /// Waits until the backlog is empty (everything acked or dead-lettered), polling every few milliseconds, for at
    /// most `timeout`. Returns whether it emptied. Needs a backend that reports its backlog
    /// ([`crate::Capabilities::backlog`]; Pub/Sub does not): elsewhere it is an `Unsupported` error, and
    /// [`Subscription::wait_quiet`] is the portable way to wait.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.backlog().await? {
                Some(0) => return Ok(true),
                Some(_) => {}
                None => {
                    return Err(Error::new(
                        crate::ErrorKind::Unsupported,
                        "wait_idle needs a backend that reports its backlog, and this one does not \
                         (Capabilities::backlog is false): use Subscription::wait_quiet",
                    ))
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits, for at most `timeout`, until this subscription is quiet: no delivery in flight (every message it
    /// received was acked, dead-lettered or nacked, and none is held for its backoff) and nothing received for
    /// `quiet`. Returns whether it got quiet. Works on every backend, but it sees only this process: a message still
    /// on its way from the broker, or waiting out a retry backoff in the broker, is not in flight, so pick `quiet`
    /// above the broker's delivery latency and the backoffs you expect. Where the backlog is known
    /// ([`crate::Capabilities::backlog`]), [`Subscription::wait_idle`] is exact.
    pub async fn wait_quiet(&self, quiet: Duration, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.runner.is_stopped() || self.runner.activity.is_quiet(quiet) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops this subscription: no new deliveries; in-flight handlers get up to `timeout` to finish; unfinished
    /// messages stay unacked and are redelivered after their ack deadline. Returns within `timeout` plus
    /// [`crate::Bus::SHUTDOWN_MARGIN`]. The name can then be subscribed again.
    pub async fn shutdown(&self, timeout: Duration) {
        self.runner.wait(timeout).await;
    }
}
