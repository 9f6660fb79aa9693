//! Subscription settings and their defaults.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::retry::{positive, RetryPolicy};

/// Settings of one subscription. Defaults: max concurrency 100, ack deadline 30 s, retention 7 days,
/// [`RetryPolicy::DEFAULT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionConfig {
    /// Handlers of this subscription running at once in this process.
    pub max_concurrency: usize,
    /// How long a delivered message stays leased to this consumer before it is redelivered, unless the runtime
    /// extends the lease (it does while the handler runs).
    pub ack_deadline: Duration,
    /// How long an undelivered message is kept.
    pub message_retention: Duration,
    /// Backoff and dead-letter rule for failed handlers.
    pub retry: RetryPolicy,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl SubscriptionConfig {
    /// The defaults, usable in `const` and `static` items.
    pub const DEFAULT: SubscriptionConfig = SubscriptionConfig {
        max_concurrency: 100,
        ack_deadline: Duration::from_secs(30),
        message_retention: Duration::from_secs(7 * 24 * 3600),
        retry: RetryPolicy::DEFAULT,
    };

    /// Same config with another concurrency limit.
    pub const fn with_max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n;
        self
    }
    /// Same config with another ack deadline.
    pub const fn with_ack_deadline(mut self, d: Duration) -> Self {
        self.ack_deadline = d;
        self
    }
    /// Same config with another retention.
    pub const fn with_message_retention(mut self, d: Duration) -> Self {
        self.message_retention = d;
        self
    }
    /// Same config with another retry policy.
    pub const fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// Same config with another retry count (see [`RetryPolicy::NO_RETRIES`], [`RetryPolicy::INFINITE_RETRIES`]).
    pub const fn with_max_retries(mut self, n: u32) -> Self {
        self.retry.max_retries = n;
        self
    }

    /// Checks every rule; the error names the field, its value and the rule.
    pub fn validate(&self) -> Result<()> {
        if self.max_concurrency == 0 {
            return Err(Error::invalid("max_concurrency 0 is invalid: it must be at least 1"));
        }
        positive("ack_deadline", self.ack_deadline)?;
        positive("message_retention", self.message_retention)?;
        self.retry.validate()
    }

    /// Applies settings overridden in configuration.
    pub fn apply(mut self, o: &SubscriptionOverride) -> Self {
        if let Some(v) = o.max_concurrency {
            self.max_concurrency = v;
        }
        if let Some(v) = o.ack_deadline {
            self.ack_deadline = v;
        }
        if let Some(v) = o.message_retention {
            self.message_retention = v;
        }
        if let Some(v) = o.min_backoff {
            self.retry.min_backoff = v;
        }
        if let Some(v) = o.max_backoff {
            self.retry.max_backoff = v;
        }
        if let Some(v) = o.max_retries {
            self.retry.max_retries = v;
        }
        self
    }
}

/// Subscription settings that configuration may override (`[subscriptions.<topic>.<subscription>]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionOverride {
    /// See [`SubscriptionConfig::max_concurrency`].
    pub max_concurrency: Option<usize>,
    /// See [`SubscriptionConfig::ack_deadline`]; a duration such as `"30s"`.
    #[serde(default, with = "humantime_serde")]
    pub ack_deadline: Option<Duration>,
    /// See [`SubscriptionConfig::message_retention`].
    #[serde(default, with = "humantime_serde")]
    pub message_retention: Option<Duration>,
    /// See [`RetryPolicy::min_backoff`].
    #[serde(default, with = "humantime_serde")]
    pub min_backoff: Option<Duration>,
    /// See [`RetryPolicy::max_backoff`].
    #[serde(default, with = "humantime_serde")]
    pub max_backoff: Option<Duration>,
    /// See [`RetryPolicy::max_retries`].
    pub max_retries: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = SubscriptionConfig::default();
        assert_eq!(c.max_concurrency, 100);
        assert_eq!(c.ack_deadline, Duration::from_secs(30));
        assert_eq!(c.message_retention, Duration::from_secs(604_800));
        assert_eq!(c.retry.min_backoff, Duration::from_secs(10));
        assert_eq!(c.retry.max_backoff, Duration::from_secs(600));
        assert_eq!(c.retry.max_retries, 100);
        c.validate().unwrap();
    }

    #[test]
    fn non_positive_durations_are_rejected_by_name() {
        let e = SubscriptionConfig::DEFAULT.with_ack_deadline(Duration::ZERO).validate().unwrap_err();
        assert!(e.to_string().contains("ack_deadline 0ns is invalid: it must be a positive duration"), "{e}");
        let e = SubscriptionConfig::DEFAULT.with_message_retention(Duration::ZERO).validate().unwrap_err();
        assert!(e.to_string().contains("message_retention"), "{e}");
        let e = SubscriptionConfig::DEFAULT.with_max_concurrency(0).validate().unwrap_err();
        assert!(e.to_string().contains("max_concurrency 0"), "{e}");
    }
}
