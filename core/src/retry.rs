//! Retry policy: exponential backoff between attempts and the point where a message is dead-lettered; and the
//! portable layer's retry of a backend call that failed transiently (`call`).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::time::jittered;
use crate::error::{Error, Result};

/// Attempts of one backend call that keeps failing retryably (see [`call`]).
pub(crate) const CALL_ATTEMPTS: u32 = 4;
/// Backoff before a backend call's second attempt; doubles per attempt (100, 200, 400 ms), jittered.
const CALL_BACKOFF: Duration = Duration::from_millis(100);

/// Runs a backend call until it succeeds, fails for good (an error that is not [`Error::is_retryable`]), or
/// [`CALL_ATTEMPTS`] attempts failed, with jittered exponential backoff between attempts. Drivers make one call per
/// attempt and never retry (the AWS SDK's own retries are off), so this is the only retry of settlements,
/// provisioning and operator reads. Once `stop` is cancelled (a shutdown past its deadline) no further attempt is
/// made, and a backoff under way ends at once: the call returns its last error. `what` names the call in the log.
pub(crate) async fn call<T, F, Fut>(what: &str, stop: Option<&CancellationToken>, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut n = 1;
    loop {
        let e = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !e.is_retryable() || n >= CALL_ATTEMPTS || stop.is_some_and(CancellationToken::is_cancelled) {
            return Err(e);
        }
        let delay = jittered(CALL_BACKOFF * 2u32.pow(n - 1));
        tracing::warn!(target: "tidings", call = what, attempt = n, retry_in = ?delay, error = %e,
            "backend call failed; retrying");
        match stop {
            Some(stop) => tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return Err(e),
            },
            None => tokio::time::sleep(delay).await,
        }
        n += 1;
    }
}

/// How a subscription retries a message whose handler failed.
///
/// The backoff after the n-th failed attempt is `min(max_backoff, min_backoff * 2^(n-1))`; after
/// `max_retries + 1` failed attempts the message goes to the subscription's dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Delay before the first redelivery.
    pub min_backoff: Duration,
    /// Upper bound on any delay.
    pub max_backoff: Duration,
    /// Redeliveries after the first attempt; [`RetryPolicy::NO_RETRIES`] or [`RetryPolicy::INFINITE_RETRIES`].
    pub max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl RetryPolicy {
    /// The first failure dead-letters the message.
    pub const NO_RETRIES: u32 = 0;
    /// Never dead-letter on failures (poison and unrecoverable messages still go to the DLQ).
    pub const INFINITE_RETRIES: u32 = u32::MAX;
    /// 10 s min backoff, 10 min max backoff, 100 retries.
    pub const DEFAULT: RetryPolicy =
        RetryPolicy { min_backoff: Duration::from_secs(10), max_backoff: Duration::from_secs(600), max_retries: 100 };

    /// A policy with the given bounds and the default 100 retries.
    pub const fn new(min_backoff: Duration, max_backoff: Duration) -> Self {
        Self { min_backoff, max_backoff, max_retries: 100 }
    }

    /// Same policy with another retry count.
    pub const fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Delay before redelivery after the `failed_attempt`-th failed attempt (1-based).
    pub fn backoff(&self, failed_attempt: u32) -> Duration {
        let exp = failed_attempt.saturating_sub(1).min(63);
        let factor = 1u64 << exp;
        let nanos = self.min_backoff.as_nanos().saturating_mul(factor as u128);
        let max = self.max_backoff.as_nanos();
        Duration::from_nanos(nanos.min(max).min(u64::MAX as u128) as u64)
    }

    /// Total attempts before dead-lettering, or `None` for infinite retries.
    pub fn max_attempts(&self) -> Option<u32> {
        (self.max_retries != Self::INFINITE_RETRIES).then(|| self.max_retries.saturating_add(1))
    }

    /// Whether a message whose `attempt`-th delivery just failed must go to the dead-letter queue.
    pub fn is_exhausted(&self, attempt: u32) -> bool {
        self.max_attempts().is_some_and(|max| attempt >= max)
    }

    /// Checks the policy's rules; the error names the field, its value and the rule.
    pub fn validate(&self) -> Result<()> {
        positive("retry.min_backoff", self.min_backoff)?;
        positive("retry.max_backoff", self.max_backoff)?;
        if self.min_backoff > self.max_backoff {
            return Err(Error::invalid(format!(
                "retry.min_backoff {:?} is above retry.max_backoff {:?}; min_backoff must be <= max_backoff",
                self.min_backoff, self.max_backoff
            )));
        }
        Ok(())
    }
}

/// Checks that a duration setting is positive; the error names the field and its value.
pub(crate) fn positive(field: &str, d: Duration) -> Result<()> {
    if d.is_zero() {
        return Err(Error::invalid(format!("{field} {d:?} is invalid: it must be a positive duration")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    use super::*;

    /// Calls `call` with an attempt that fails with `retryable` errors its first `failures` times; returns the outcome
    /// and the attempts made.
    async fn failing(failures: u32, retryable: bool, stop: Option<&CancellationToken>) -> (Result<u32>, u32) {
        let n = AtomicU32::new(0);
        let r = call("test", stop, || async {
            let i = n.fetch_add(1, SeqCst) + 1;
            if i <= failures {
                return Err(Error::backend(format!("attempt {i} failed (injected)"), retryable));
            }
            Ok(i)
        })
        .await;
        (r, n.load(SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_retried_with_backoff_only_while_retryable_and_at_most_4_times() {
        let start = tokio::time::Instant::now();
        let (r, n) = failing(2, true, None).await;
        assert_eq!((r.unwrap(), n), (3, 3), "succeeds at the third attempt");
        let waited = start.elapsed();
        // 100 ms then 200 ms, each jittered by [0.5, 1.5).
        assert!(waited >= Duration::from_millis(150) && waited < Duration::from_millis(450), "{waited:?}");
        let (r, n) = failing(10, true, None).await;
        assert_eq!(n, CALL_ATTEMPTS, "gives up after {CALL_ATTEMPTS} attempts");
        assert!(r.unwrap_err().to_string().contains("attempt 4 failed"), "returns the last error");
        let (r, n) = failing(10, false, None).await;
        assert_eq!(n, 1, "an error that is not retryable is not retried");
        assert!(!r.unwrap_err().is_retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_retries_and_the_backoff_under_way() {
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            s.cancel();
        });
        let start = tokio::time::Instant::now();
        let (r, n) = failing(10, true, Some(&stop)).await;
        assert_eq!((n, start.elapsed()), (1, Duration::from_millis(10)), "the backoff ended with the stop");
        assert!(r.is_err());
        let (_, n) = failing(10, true, Some(&stop)).await;
        assert_eq!(n, 1, "no retry once stopped");
    }

    #[test]
    fn backoff_doubles_from_min_and_caps_at_max() {
        let p = RetryPolicy::DEFAULT;
        let s = Duration::from_secs;
        assert_eq!(p.backoff(1), s(10));
        assert_eq!(p.backoff(2), s(20));
        assert_eq!(p.backoff(3), s(40));
        assert_eq!(p.backoff(6), s(320));
        assert_eq!(p.backoff(7), s(600));
        assert_eq!(p.backoff(1000), s(600));
    }

    #[test]
    fn exhaustion_counts_attempts() {
        let p = RetryPolicy::DEFAULT.with_max_retries(2);
        assert!(!p.is_exhausted(2));
        assert!(p.is_exhausted(3));
        assert!(RetryPolicy::DEFAULT.with_max_retries(RetryPolicy::NO_RETRIES).is_exhausted(1));
        assert!(!RetryPolicy::DEFAULT.with_max_retries(RetryPolicy::INFINITE_RETRIES).is_exhausted(u32::MAX));
    }

    #[test]
    fn min_above_max_is_rejected_with_both_values() {
        let e = RetryPolicy::new(Duration::from_secs(20), Duration::from_secs(5)).validate().unwrap_err();
        let m = e.to_string();
        assert!(m.contains("20s") && m.contains("5s") && m.contains("min_backoff must be <= max_backoff"), "{m}");
    }

    #[test]
    fn zero_backoff_is_rejected() {
        let e = RetryPolicy::new(Duration::ZERO, Duration::from_secs(5)).validate().unwrap_err();
        assert!(e.to_string().contains("retry.min_backoff"), "{e}");
    }
}
