//! The topology a bus declares: its topics and running subscriptions with their effective settings, as JSON (for
//! `tidings doctor --topology FILE`, the dashboard, deployment tooling). [`crate::Bus::topology`] builds it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;
use crate::subscription::SubscriptionConfig;
use crate::topic::{DeliveryGuarantee, TopicConfig};

/// Declared topics and subscriptions of one bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Backend name (`local`, `aws`, `gcp`).
    pub backend: String,
    /// The name prefix in force.
    pub name_prefix: String,
    /// Topics used on the bus (published to or subscribed), by name.
    pub topics: Vec<TopologyTopic>,
}

/// A declared topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyTopic {
    /// Logical name.
    pub name: String,
    /// Cloud resource name (prefix and overrides applied).
    pub resource: String,
    /// `at-least-once` or `exactly-once`.
    pub delivery: Delivery,
    /// Ordered by ordering key.
    pub ordered: bool,
    /// Subscriptions running on the bus.
    pub subscriptions: Vec<TopologySubscription>,
}

/// The delivery guarantee, as JSON spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// [`DeliveryGuarantee::AtLeastOnce`].
    AtLeastOnce,
    /// [`DeliveryGuarantee::ExactlyOnce`].
    ExactlyOnce,
}

/// A declared subscription with its effective settings (code, then config overrides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologySubscription {
    /// Logical name.
    pub name: String,
    /// Cloud resource name.
    pub resource: String,
    /// Handlers running at once in one process.
    pub max_concurrency: usize,
    /// Ack deadline, such as `"30s"`.
    #[serde(with = "human")]
    pub ack_deadline: Duration,
    /// Retention of undelivered messages.
    #[serde(with = "human")]
    pub message_retention: Duration,
    /// First backoff.
    #[serde(with = "human")]
    pub min_backoff: Duration,
    /// Largest backoff.
    #[serde(with = "human")]
    pub max_backoff: Duration,
    /// Retries before dead-lettering; `null` for infinite.
    pub max_retries: Option<u32>,
    /// Backlog limit; absent for the backend's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backlog: Option<u64>,
    /// `wait` or `fail` at the backlog limit.
    #[serde(default)]
    pub when_full: crate::WhenFull,
}

impl From<DeliveryGuarantee> for Delivery {
    fn from(d: DeliveryGuarantee) -> Self {
        match d {
            DeliveryGuarantee::AtLeastOnce => Delivery::AtLeastOnce,
            DeliveryGuarantee::ExactlyOnce => Delivery::ExactlyOnce,
        }
    }
}

impl TopologyTopic {
    /// Builds the entry of a topic.
    pub fn new(name: &str, resource: String, config: TopicConfig) -> Self {
        let delivery = config.delivery.into();
        Self { name: name.to_string(), resource, delivery, ordered: config.ordered, subscriptions: Vec::new() }
    }

    /// The topic's settings.
    pub fn config(&self) -> TopicConfig {
        let c = match self.delivery {
            Delivery::AtLeastOnce => TopicConfig::at_least_once(),
            Delivery::ExactlyOnce => TopicConfig::exactly_once(),
        };
        if self.ordered {
            c.ordered()
        } else {
            c
        }
    }
}

impl TopologySubscription {
    /// Builds the entry of a subscription.
    pub fn new(name: &str, resource: String, c: &SubscriptionConfig) -> Self {
        Self {
            name: name.to_string(),
            resource,
            max_concurrency: c.max_concurrency,
            ack_deadline: c.ack_deadline,
            message_retention: c.message_retention,
            min_backoff: c.retry.min_backoff,
            max_backoff: c.retry.max_backoff,
            max_retries: (c.retry.max_retries != RetryPolicy::INFINITE_RETRIES).then_some(c.retry.max_retries),
            max_backlog: c.max_backlog,
            when_full: c.when_full,
        }
    }

    /// The subscription's settings.
    pub fn config(&self) -> SubscriptionConfig {
        SubscriptionConfig {
            max_concurrency: self.max_concurrency,
            ack_deadline: self.ack_deadline,
            message_retention: self.message_retention,
            retry: RetryPolicy {
                min_backoff: self.min_backoff,
                max_backoff: self.max_backoff,
                max_retries: self.max_retries.unwrap_or(RetryPolicy::INFINITE_RETRIES),
            },
            max_backlog: self.max_backlog,
            when_full: self.when_full,
            ..SubscriptionConfig::DEFAULT
        }
    }
}

impl crate::Bus {
    /// The topics used on this bus (published to or subscribed) and its running subscriptions, with their effective
    /// settings; serializes to JSON.
    pub fn topology(&self) -> Topology {
        let settings = self.settings();
        let mut topics: Vec<TopologyTopic> = self
            .declared_topics()
            .into_iter()
            .map(|(name, config)| TopologyTopic::new(&name, settings.resource_name(&name), config))
            .collect();
        for r in self.runners() {
            let spec = &r.spec;
            let entry = TopologySubscription::new(&spec.name, spec.resource.clone(), &spec.config);
            match topics.iter_mut().find(|t| t.name == spec.topic.name) {
                Some(t) => t.subscriptions.push(entry),
                None => {
                    let mut t = TopologyTopic::new(&spec.topic.name, spec.topic.resource.clone(), spec.topic.config);
                    t.subscriptions.push(entry);
                    topics.push(t);
                }
            }
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &mut topics {
            t.subscriptions.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Topology { backend: self.backend_name().to_string(), name_prefix: settings.name_prefix.clone(), topics }
    }
}

/// Durations as humantime text (`"30s"`, `"7days"`).
mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(|e| serde::de::Error::custom(format!("duration {text:?}: {e}")))
    }
}
