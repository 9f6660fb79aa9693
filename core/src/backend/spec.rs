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
}

impl SubscriptionSpec {
    /// The spec of the subscription `name` on `topic`, stored by the backend as `resource`, with `config` in force.
    pub fn new(
        topic: TopicSpec,
        name: impl Into<String>,
        resource: impl Into<String>,
        config: SubscriptionConfig,
    ) -> Self {
        Self { topic, name: name.into(), resource: resource.into(), config }
    }
}
