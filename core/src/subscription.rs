//! Subscription settings and their defaults.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::retry::{positive, RetryPolicy};

/// Settings of one subscription. Defaults: max concurrency 100, ack deadline 30 s, retention 7 days,
/// [`RetryPolicy::DEFAULT`]; for batch handlers, batches of at most 100 messages gathered for at most 1 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionConfig {
    /// Handlers of this subscription running at once in this process: handler calls, so for a batch handler
    /// ([`crate::Bus::subscribe_batch`]) batches.
    pub max_concurrency: usize,
    /// How long a delivered message stays leased to this consumer before it is redelivered, unless the runtime
    /// extends the lease (it does while the handler runs).
    pub ack_deadline: Duration,
    /// How long an undelivered message is kept.
    pub message_retention: Duration,
    /// Backoff and dead-letter rule for failed handlers.
    pub retry: RetryPolicy,
    /// Most messages the subscription's backlog (ready, delayed and leased) may hold before publishes wait or fail
    /// ([`SubscriptionConfig::when_full`]); `None` leaves the backend's default (the in-memory bus: 100,000; brokers
    /// keep their own limits). Only where [`crate::Capabilities::bounded_backlog`]; elsewhere a limit is refused at
    /// subscribe.
    pub max_backlog: Option<u64>,
    /// What a publish does while the backlog is at its limit.
    pub when_full: WhenFull,
    /// Batch handlers ([`crate::Bus::subscribe_batch`]): most messages in one batch, from 1 to the backend's
    /// [`crate::Capabilities::max_batch_messages`]. A batch is handed to the handler once it holds this many, or
    /// [`SubscriptionConfig::max_wait`] after its first message arrived. Single handlers ignore it.
    pub max_messages: usize,
    /// Batch handlers: longest a batch waits, from its first message's arrival, for more messages before it is handed
    /// to the handler (positive). Single handlers ignore it.
    pub max_wait: Duration,
}

/// What a publish does while a subscription's backlog is at its limit (`when_full` in configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    /// Wait until the subscription has room (its handlers catch up): back-pressure on the publisher.
    #[default]
    Wait,
    /// Fail at once with [`crate::ErrorKind::BacklogFull`], naming the subscription and its limit.
    Fail,
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
        max_backlog: None,
        when_full: WhenFull::Wait,
        max_messages: 100,
        max_wait: Duration::from_secs(1),
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
    /// Same config with a backlog limit (see [`SubscriptionConfig::max_backlog`]).
    pub const fn with_max_backlog(mut self, n: u64) -> Self {
        self.max_backlog = Some(n);
        self
    }
    /// Same config with another behaviour at the backlog limit.
    pub const fn with_when_full(mut self, w: WhenFull) -> Self {
        self.when_full = w;
        self
    }
    /// Same config with another batch size limit (see [`SubscriptionConfig::max_messages`]).
    pub const fn with_max_messages(mut self, n: usize) -> Self {
        self.max_messages = n;
        self
    }
    /// Same config with another batch wait (see [`SubscriptionConfig::max_wait`]).
    pub const fn with_max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
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
        if self.max_backlog == Some(0) {
            return Err(Error::invalid("max_backlog 0 is invalid: it must be at least 1"));
        }
        if self.max_messages == 0 {
            return Err(Error::invalid("max_messages 0 is invalid: a batch holds at least 1 message"));
        }
        positive("ack_deadline", self.ack_deadline)?;
        positive("message_retention", self.message_retention)?;
        positive("max_wait", self.max_wait)?;
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
        if let Some(v) = o.max_backlog {
            self.max_backlog = Some(v);
        }
        if let Some(v) = o.when_full {
            self.when_full = v;
        }
        if let Some(v) = o.max_messages {
            self.max_messages = v;
        }
        if let Some(v) = o.max_wait {
            self.max_wait = v;
        }
        self
    }
}

/// Subscription settings that configuration may override (`[subscriptions.<topic>.<subscription>]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionOverride {
    /// See [`SubscriptionConfig::max_concurrency`].
    #[serde(default, deserialize_with = "count")]
    pub max_concurrency: Option<usize>,
    /// See [`SubscriptionConfig::ack_deadline`]; a duration such as `"30s"`.
    #[serde(default, deserialize_with = "duration")]
    pub ack_deadline: Option<Duration>,
    /// See [`SubscriptionConfig::message_retention`].
    #[serde(default, deserialize_with = "duration")]
    pub message_retention: Option<Duration>,
    /// See [`RetryPolicy::min_backoff`].
    #[serde(default, deserialize_with = "duration")]
    pub min_backoff: Option<Duration>,
    /// See [`RetryPolicy::max_backoff`].
    #[serde(default, deserialize_with = "duration")]
    pub max_backoff: Option<Duration>,
    /// See [`RetryPolicy::max_retries`].
    #[serde(default, deserialize_with = "count")]
    pub max_retries: Option<u32>,
    /// See [`SubscriptionConfig::max_backlog`].
    #[serde(default, deserialize_with = "count")]
    pub max_backlog: Option<u64>,
    /// See [`SubscriptionConfig::when_full`]: `"wait"` or `"fail"`.
    #[serde(default)]
    pub when_full: Option<WhenFull>,
    /// See [`SubscriptionConfig::max_messages`] (batch handlers).
    #[serde(default, deserialize_with = "count")]
    pub max_messages: Option<usize>,
    /// See [`SubscriptionConfig::max_wait`] (batch handlers); a duration such as `"500ms"`.
    #[serde(default, deserialize_with = "duration")]
    pub max_wait: Option<Duration>,
}

impl<'de> Deserialize<'de> for WhenFull {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "wait" => Ok(WhenFull::Wait),
            "fail" => Ok(WhenFull::Fail),
            other => {
                Err(serde::de::Error::custom(format!("when_full {other:?} is not a mode; expected one of: wait, fail")))
            }
        }
    }
}

/// A duration written with its unit, such as `"30s"` or `"10m"` (humantime syntax); a bare number is refused, as its
/// unit would be a guess.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration with its unit, such as \"30s\" or \"10m\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v.trim())
                .map_err(|e| E::custom(format!("{v:?} is not a duration ({e}); write it like \"30s\" or \"10m\"")))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(format!("{v} has no unit; write a duration such as \"{v}s\" or \"{v}ms\"")))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format!("{v} has no unit; write a positive duration such as \"30s\"")))
        }
    }
    d.deserialize_any(Text).map(Some)
}

/// A whole number, from an integer or a string of digits (environment variables), and nothing else: `true` is not a
/// count.
fn count<'de, D, N>(d: D) -> Result<Option<N>, D::Error>
where
    D: serde::Deserializer<'de>,
    N: TryFrom<u64>,
{
    struct Count<N>(std::marker::PhantomData<N>);
    impl<N: TryFrom<u64>> serde::de::Visitor<'_> for Count<N> {
        type Value = N;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a whole number from 0 to {}", std::any::type_name::<N>().rsplit("::").next().unwrap_or("max"))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<N, E> {
            N::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<N, E> {
            let v =
                u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative; expected a whole number >= 0")))?;
            self.visit_u64(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<N, E> {
            let n: u64 = v.trim().parse().map_err(|_| E::custom(format!("{v:?} is not a whole number >= 0")))?;
            self.visit_u64(n)
        }
    }
    d.deserialize_any(Count(std::marker::PhantomData)).map(Some)
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
        assert_eq!((c.max_backlog, c.when_full), (None, WhenFull::Wait));
        assert_eq!((c.max_messages, c.max_wait), (100, Duration::from_secs(1)));
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
        let e = SubscriptionConfig::DEFAULT.with_max_backlog(0).validate().unwrap_err();
        assert!(e.to_string().contains("max_backlog 0 is invalid: it must be at least 1"), "{e}");
        let e = SubscriptionConfig::DEFAULT.with_max_messages(0).validate().unwrap_err();
        assert!(e.to_string().contains("max_messages 0 is invalid: a batch holds at least 1 message"), "{e}");
        let e = SubscriptionConfig::DEFAULT.with_max_wait(Duration::ZERO).validate().unwrap_err();
        assert!(e.to_string().contains("max_wait 0ns is invalid: it must be a positive duration"), "{e}");
    }

    #[test]
    fn batch_settings_are_overridden_from_configuration() {
        let s =
            crate::Settings::from_toml("[subscriptions.orders.warehouse]\nmax_messages = 500\nmax_wait = \"250ms\"\n")
                .unwrap();
        let o = s.subscription_override("orders", "warehouse").unwrap();
        assert_eq!((o.max_messages, o.max_wait), (Some(500), Some(Duration::from_millis(250))));
        let c = SubscriptionConfig::DEFAULT.apply(o);
        assert_eq!((c.max_messages, c.max_wait), (500, Duration::from_millis(250)));
        let vars = [("TIDINGS_SUBSCRIPTIONS__ORDERS__WAREHOUSE__MAX_MESSAGES".to_string(), "20".to_string())];
        let s = crate::Settings::load(vars.into_iter().collect()).unwrap();
        assert_eq!(s.subscription_override("orders", "warehouse").unwrap().max_messages, Some(20));
        let e = crate::Settings::from_toml("[subscriptions.orders.warehouse]\nmax_wait = 5\n").unwrap_err();
        assert!(e.to_string().contains("5 has no unit"), "{e}");
        let e = crate::Settings::from_toml("[subscriptions.orders.warehouse]\nmax_messages = -1\n").unwrap_err();
        assert!(e.to_string().contains("-1 is negative"), "{e}");
    }
}
