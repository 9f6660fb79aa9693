//! Retry policy: exponential backoff between attempts and the point where a message is dead-lettered.

use std::time::Duration;

use crate::error::{Error, Result};

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
    use super::*;

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
