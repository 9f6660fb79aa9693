//! The operator's contract: what the `tidings` CLI and the dashboard need from a backend whose state lives outside one
//! process, beyond running subscriptions: list the topics and subscriptions under a name prefix, read a
//! subscription's figures, reach its dead letters, check its resources and permissions, and delete it.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use super::{Check, Orphan, SubscriptionSpec};
use crate::dead_letter::DeadLetters;
use crate::error::Result;
use crate::topic::TopicConfig;
use crate::topology::Topology;
use std::sync::Arc;

/// A topic found under the prefix, as the backend names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResource {
    /// The resource name without backend decorations (AWS's `.fifo`): what [`crate::Settings::resource_name`] gives.
    pub resource: String,
    /// The settings the resource shows, where it shows them (AWS: a FIFO topic reads as exactly-once and ordered,
    /// since SNS cannot tell which of the two made it FIFO; GCP: from its subscriptions' settings).
    pub config: Option<TopicConfig>,
    /// Its subscriptions (not their dead-letter queues).
    pub subscriptions: Vec<SubscriptionResource>,
}

/// A subscription found under the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionResource {
    /// The resource name without decorations: what [`crate::Settings::subscription_resource_name`] gives.
    pub resource: String,
    /// Its dead-letter queue's resource name, where it has one.
    pub dead_letter_resource: Option<String>,
}

/// A subscription's figures; `None` where the backend cannot tell (see [`Admin::unknown`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubscriptionStats {
    /// Messages not yet acked or dead-lettered (ready, delayed or leased).
    pub backlog: Option<u64>,
    /// Of those, scheduled: published with a due time not reached yet and never delivered (see
    /// [`crate::BacklogDetail::scheduled`]). Known where the backend keeps delays itself (the in-memory bus, SQL);
    /// `None` where the runtime holds delayed messages (AWS, Pub/Sub, NATS: the broker counts them in flight).
    pub scheduled: Option<u64>,
    /// Of those, leased to a consumer right now.
    pub in_flight: Option<u64>,
    /// Age of the oldest message not yet acked.
    #[serde(with = "opt_secs")]
    pub oldest_unacked: Option<Duration>,
    /// Messages in the dead-letter queue.
    pub dead_letters: Option<u64>,
}

/// Why a figure is unknown on a backend: the field of [`SubscriptionStats`] (or `rates`) and the reason.
pub type Unknown = (&'static str, &'static str);

/// Operator access to a backend whose state lives outside a process.
#[async_trait]
pub trait Admin: Send + Sync + Debug {
    /// Topics (with their subscriptions) whose resource names start with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<TopicResource>>;
    /// Figures of one subscription.
    async fn stats(&self, sub: &SubscriptionSpec) -> Result<SubscriptionStats>;
    /// A subscription's dead-letter queue: the one dead-letter surface through which the operator reads, redrives
    /// and purges it (the same one its running subscription's driver hands out). `None` where the backend keeps
    /// none for it.
    async fn dead_letter_queue(&self, sub: &SubscriptionSpec) -> Result<Option<Arc<dyn DeadLetters>>> {
        let _ = sub;
        Ok(None)
    }
    /// Deletes a subscription and its dead-letter queue (the CLI's temporary subscriptions).
    async fn delete_subscription(&self, sub: &SubscriptionSpec) -> Result<()>;
    /// The figures this backend cannot tell, each with the reason (printed as footnotes).
    fn unknown(&self) -> Vec<Unknown> {
        Vec::new()
    }
    /// Checks a subscription's resources (its topic, itself, its dead-letter queue) as `provisioning = "verify"`
    /// does, creating nothing and receiving nothing: a `NotFound` or `Mismatch` error names the resource, the setting
    /// and both values. The backend's own provisioning mode applies (`tidings doctor` opens it with `verify`).
    async fn provisioned(&self, spec: &SubscriptionSpec) -> Result<()> {
        let _ = spec;
        Err(crate::Error::new(crate::ErrorKind::Unsupported, "this backend does not check provisioning"))
    }
    /// Resources under `prefix` left behind by a subscription that no longer exists (its dead-letter topic, queue or
    /// subscription), which [`Admin::list`] does not show as topics or subscriptions. Backends whose dead-letter
    /// store goes with the subscription have none.
    async fn orphans(&self, prefix: &str) -> Result<Vec<Orphan>> {
        let _ = prefix;
        Ok(Vec::new())
    }
    /// Whether the application's identity holds the permissions `topology` needs (`tidings doctor`); a check that
    /// cannot be made is reported as skipped, with what was left unchecked and why.
    async fn permissions(&self, topology: &Topology) -> Vec<Check> {
        let _ = topology;
        vec![Check::skipped("permissions", "this backend does not check permissions")]
    }
}

mod opt_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}
