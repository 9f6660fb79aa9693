//! Topics and subscriptions as a backend sees them: logical name, resource name, settings.

use crate::subscription::SubscriptionConfig;
use crate::topic::TopicConfig;

/// A topic as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSpec {
    /// Logical name used in code.
    pub name: String,
    /// Name of the cloud resource (prefix and overrides from config applied).
    pub resource: String,
    /// Settings from the declaration.
    pub config: TopicConfig,
}

impl TopicSpec {
    /// The spec of the topic `name` (as in code), stored by the backend as `resource`, declared with `config`.
    pub fn new(name: impl Into<String>, resource: impl Into<String>, config: TopicConfig) -> Self {
        Self { name: name.into(), resource: resource.into(), config }
    }
}

/// A subscription as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionSpec {
    /// The topic it receives from: a backend creates or finds the subscription's resources on that topic's.
    pub topic: TopicSpec,
    /// Logical name used in code.
    pub name: String,
    /// Name of the cloud resource.
    pub resource: String,
    /// Effective settings (code, then config overrides).
    pub config: SubscriptionConfig,
    /// Its handler takes batches ([`crate::Bus::subscribe_batch`]): each of the `max_concurrency` handler calls holds
    /// up to `config.max_messages` messages. See [`SubscriptionSpec::max_in_flight`].
    pub batch: bool,
}

impl SubscriptionSpec {
    /// The spec of the subscription `name` on `topic`, stored by the backend as `resource`, with `config` in force.
    pub fn new(
        topic: TopicSpec,
        name: impl Into<String>,
        resource: impl Into<String>,
        config: SubscriptionConfig,
    ) -> Self {
        Self { topic, name: name.into(), resource: resource.into(), config, batch: false }
    }

    /// The same spec for a batch handler ([`SubscriptionSpec::batch`]).
    pub fn with_batch(mut self, batch: bool) -> Self {
        self.batch = batch;
        self
    }

    /// Most messages this process holds handed out to its handlers at once (what a backend's prefetch or flow control
    /// should allow): `max_concurrency` for a single handler; for a batch handler, `max_messages` for each of the
    /// `max_concurrency` running batches and for the one being gathered.
    pub fn max_in_flight(&self) -> usize {
        match self.batch {
            false => self.config.max_concurrency,
            true => self.config.max_concurrency.saturating_add(1).saturating_mul(self.config.max_messages),
        }
    }
}
