//! Typed topic declarations and their settings.

use std::fmt;
use std::marker::PhantomData;

/// Delivery guarantee of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryGuarantee {
    /// Every message is delivered at least once to every subscription; redeliveries can happen.
    AtLeastOnce,
    /// A message acked by a subscription is never delivered to it again, and a republish of the same message id
    /// (an outbox retry) is de-duplicated.
    ExactlyOnce,
}

/// Settings of a topic, fixed in code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TopicConfig {
    /// At-least-once or exactly-once.
    pub delivery: DeliveryGuarantee,
    /// Messages sharing an ordering key are delivered in publish order, one at a time
    /// (head-of-line blocking until acked or dead-lettered).
    pub ordered: bool,
}

impl TopicConfig {
    /// At-least-once, unordered: every subscription gets each message at least once (a redelivery after a crash or
    /// an expired lease can repeat it), with no order between messages. The default choice; handlers must be
    /// idempotent.
    pub const fn at_least_once() -> Self {
        Self { delivery: DeliveryGuarantee::AtLeastOnce, ordered: false }
    }
    /// Exactly-once, unordered: a message published twice under the same id (an outbox relay's retry) is delivered
    /// once per subscription within the backend's de-duplication window (SNS/SQS: 5 minutes, on FIFO topics and
    /// queues), and a handler's ack is final; see [`DeliveryGuarantee::ExactlyOnce`].
    pub const fn exactly_once() -> Self {
        Self { delivery: DeliveryGuarantee::ExactlyOnce, ordered: false }
    }
    /// Same config with ordering by ordering key.
    pub const fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }
    /// Whether this topic de-duplicates.
    pub const fn is_exactly_once(&self) -> bool {
        matches!(self.delivery, DeliveryGuarantee::ExactlyOnce)
    }
}

/// A topic declaration, typed by its message type. Declare it once, typically as a `static`:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidings::{Topic, TopicConfig};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct SignupEvent { pub user_id: u64 }
///
/// pub static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());
/// ```
///
/// The declaration holds no connection; [`Topic::publish`] takes the [`Bus`](crate::Bus) to publish on, so the same static works
/// with any backend and in isolated tests.
pub struct Topic<T> {
    name: &'static str,
    config: TopicConfig,
    _message: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic").field("name", &self.name).field("config", &self.config).finish()
    }
}

impl<T> Topic<T> {
    /// Declares a topic. The name is validated when the topic is first used on a bus
    /// (1-63 characters, `^[a-z]([-a-z0-9]*[a-z0-9])?$`).
    pub const fn new(name: &'static str, config: TopicConfig) -> Self {
        Self { name, config, _message: PhantomData }
    }
    /// The name used in code and configuration; the backend's resource name is derived from it (name prefix and
    /// `[names]` override applied).
    pub const fn name(&self) -> &'static str {
        self.name
    }
    /// The delivery guarantee and ordering it was declared with.
    pub const fn config(&self) -> TopicConfig {
        self.config
    }
}
