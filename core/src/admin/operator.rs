//! One operator view over any bus: the backend's [`Admin`] where it has one (state outside the process), else the
//! subscriptions running on the bus itself (the in-memory bus, in an application that embeds the dashboard).

use std::sync::Arc;

use serde::Serialize;

use super::{
    logical_subscription, logical_topic, Admin, Check, Orphan, Pace, Select, SubscriptionStats, TopicResource,
};
use crate::backend::{SubscriptionSpec, TopicSpec};
use crate::bus::Bus;
use crate::dead_letter::{self, DeadLetter, DeadLetters, Move};
use crate::error::{Error, ErrorKind, Result};
use crate::retry;
use crate::runtime::Runner;
use crate::subscription::SubscriptionConfig;
use crate::topic::TopicConfig;
use crate::topology::TopologyTopic;

/// Operator actions on one bus.
#[derive(Clone, Debug)]
pub struct Operator {
    bus: Bus,
    admin: Option<Arc<dyn Admin>>,
}

/// Every topic and subscription the operator can see, with figures.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// The backend's name (`local`, `aws`, `gcp`, `nats`, `sqlite`, `postgres`).
    pub backend: String,
    /// The [`name_prefix`](crate::Settings::name_prefix) the listing was made under: only resources whose names
    /// start with it are listed, so one account can hold several environments (`dev-`, `prod-`) apart.
    pub name_prefix: String,
    /// The topics the backend lists under the prefix, plus those declared on this bus but not provisioned yet (all of
    /// them, on the in-memory bus), sorted by name.
    pub topics: Vec<TopicEntry>,
    /// Figures the backend cannot tell, with the reason.
    pub unknown: Vec<UnknownField>,
    /// Resources under the prefix left behind by a subscription that no longer exists (see [`Admin::orphans`]).
    pub orphans: Vec<Orphan>,
}

/// A figure a backend cannot tell.
#[derive(Debug, Clone, Serialize)]
pub struct UnknownField {
    /// Field of [`SubscriptionStats`] (or `rates`).
    pub field: &'static str,
    /// Why the backend cannot tell it, such as "the in-memory bus keeps no publish-time index"; shown where the
    /// figure would be.
    pub reason: &'static str,
}

/// A topic in an [`Inventory`].
#[derive(Debug, Clone, Serialize)]
pub struct TopicEntry {
    /// Logical name (the resource name when it does not follow the naming scheme).
    pub name: String,
    /// The backend's name for it (the name prefix and any `[names]` override applied): what its console, its own
    /// client or `tidings ls` shows.
    pub resource: String,
    /// `at-least-once` / `exactly-once`: as declared on this bus, else as its resource shows; `None` when neither
    /// tells (a backend that keeps no such setting on the resource).
    pub delivery: Option<crate::topology::Delivery>,
    /// Whether ordering keys are honoured, known the same way as [`TopicEntry::delivery`].
    pub ordered: Option<bool>,
    /// Its subscriptions, sorted by name, each with its figures.
    pub subscriptions: Vec<SubscriptionEntry>,
}

/// A subscription in an [`Inventory`].
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionEntry {
    /// The name used in code (`bus.subscribe(&TOPIC, "billing", ...)`), recovered from the resource name by the
    /// naming scheme; the resource name itself when it does not follow the scheme.
    pub name: String,
    /// The backend's name for it (prefix and overrides applied), such as `dev-orders--billing` for an SQS queue.
    pub resource: String,
    /// Its dead-letter queue's resource name.
    pub dead_letter_resource: Option<String>,
    /// Running on this bus (in this process).
    pub running_here: bool,
    /// Figures; `null` where unknown.
    pub stats: SubscriptionStats,
    /// `None` when its resources exist; else what is missing, as the backend said it (such as `aws: SQS queue
    /// "shop-orders--billing-dlq" does not exist`): its figures are then unknown.
    pub missing: Option<String>,
}

/// Where a subscription's operations go.
enum Target {
    Admin(Arc<dyn Admin>, Box<SubscriptionSpec>),
    Local(Arc<Runner>),
}

impl Operator {
    /// The names and pricing of the bus's backend.
    pub fn backend_info(&self) -> &crate::backend::BackendInfo {
        self.bus.backend_info()
    }

    /// The operator of `bus`.
    pub fn new(bus: &Bus) -> Self {
        Self { bus: bus.clone(), admin: bus.backend().admin() }
    }

    /// The bus this operator reads and acts through (its settings name the resources).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Whether the backend's state can be reached from outside the processes that use it (the CLI needs that).
    pub fn has_admin(&self) -> bool {
        self.admin.is_some()
    }

    fn unknown(&self) -> Vec<UnknownField> {
        match &self.admin {
            Some(a) => a.unknown().into_iter().map(|(field, reason)| UnknownField { field, reason }).collect(),
            None => vec![
                UnknownField { field: "in_flight", reason: "the in-memory bus does not split its backlog" },
                UnknownField { field: "oldest_unacked", reason: "the in-memory bus keeps no publish-time index" },
            ],
        }
    }

    async fn listing(&self) -> Result<Vec<TopicResource>> {
        match &self.admin {
            Some(a) => retry::call("list", None, || a.list(&self.bus.settings().name_prefix)).await,
            None => Ok(Vec::new()),
        }
    }

    /// Topics and subscriptions under the name prefix (and those declared on this bus), with figures.
    pub async fn inventory(&self) -> Result<Inventory> {
        self.inventory_with(true).await
    }

    /// `(topic, subscription)` of every subscription [`Operator::inventory`] lists, without reading figures.
    pub async fn subscription_names(&self) -> Result<Vec<(String, String)>> {
        let inv = self.inventory_with(false).await?;
        Ok(inv.topics.iter().flat_map(|t| t.subscriptions.iter().map(|s| (t.name.clone(), s.name.clone()))).collect())
    }

    async fn inventory_with(&self, figures: bool) -> Result<Inventory> {
        let settings = self.bus.settings();
        let declared = self.bus.topology();
        let runners = self.bus.runners();
        let mut topics: Vec<TopicEntry> = Vec::new();
        for t in self.listing().await? {
            let name = logical_topic(settings, &t.resource).unwrap_or_else(|| t.resource.clone());
            let config = declared.topics.iter().find(|d| d.name == name).map(TopologyTopic::config).or(t.config);
            let mut subs = Vec::new();
            for s in &t.subscriptions {
                let sub_name = logical_subscription(settings, &name, &s.resource).unwrap_or_else(|| s.resource.clone());
                subs.push(SubscriptionEntry {
                    running_here: runners.iter().any(|r| r.key.0 == name && r.key.1 == sub_name),
                    name: sub_name,
                    resource: s.resource.clone(),
                    dead_letter_resource: s.dead_letter_resource.clone(),
                    stats: SubscriptionStats::default(),
                    missing: None,
                });
            }
            topics.push(TopicEntry {
                name,
                resource: t.resource.clone(),
                delivery: config.map(|c| c.delivery.into()),
                ordered: config.map(|c| c.ordered),
                subscriptions: subs,
            });
        }
        // What this bus declares but the listing did not show (the in-memory bus, or not provisioned yet).
        for d in &declared.topics {
            let idx = match topics.iter().position(|t| t.name == d.name) {
                Some(i) => i,
                None => {
                    topics.push(TopicEntry {
                        name: d.name.clone(),
                        resource: d.resource.clone(),
                        delivery: Some(d.delivery),
                        ordered: Some(d.ordered),
                        subscriptions: Vec::new(),
                    });
                    topics.len() - 1
                }
            };
            for s in &d.subscriptions {
                if !topics[idx].subscriptions.iter().any(|e| e.name == s.name) {
                    topics[idx].subscriptions.push(SubscriptionEntry {
                        name: s.name.clone(),
                        resource: s.resource.clone(),
                        dead_letter_resource: None,
                        running_here: true,
                        stats: SubscriptionStats::default(),
                        missing: None,
                    });
                }
            }
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &mut topics {
            t.subscriptions.sort_by(|a, b| a.name.cmp(&b.name));
            if !figures {
                continue;
            }
            let topic = t.name.clone();
            let figures = futures_util::future::join_all(t.subscriptions.iter().map(|s| {
                let (topic, sub) = (topic.clone(), s.name.clone());
                async move { self.stats(&topic, &sub).await }
            }))
            .await;
            // A subscription whose resource is gone (deleted by hand, say) is marked, the others still listed.
            for (s, f) in t.subscriptions.iter_mut().zip(figures) {
                match f {
                    Ok(f) => s.stats = f,
                    Err(e) if e.kind() == ErrorKind::NotFound => s.missing = Some(e.to_string()),
                    Err(e) => return Err(e),
                }
            }
        }
        // Left-behind resources are a footnote: a listing never fails for want of them (`tidings doctor` reports why).
        let orphans = if figures {
            self.orphans().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot list resources left behind by deleted subscriptions");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        Ok(Inventory {
            backend: self.bus.backend_name().to_string(),
            name_prefix: settings.name_prefix.clone(),
            topics,
            unknown: self.unknown(),
            orphans,
        })
    }

    /// Resources under the name prefix left behind by a subscription that no longer exists; see [`Admin::orphans`].
    pub async fn orphans(&self) -> Result<Vec<Orphan>> {
        match &self.admin {
            Some(a) => retry::call("orphans", None, || a.orphans(&self.bus.settings().name_prefix)).await,
            None => Ok(Vec::new()),
        }
    }

    /// The settings of a topic: as declared on this bus, else as its resource shows them.
    pub async fn topic_config(&self, topic: &str) -> Result<TopicConfig> {
        if let Some(t) = self.bus.topology().topics.iter().find(|t| t.name == topic) {
            return Ok(t.config());
        }
        let settings = self.bus.settings();
        let listing = self.listing().await?;
        let found = listing.iter().find(|t| logical_topic(settings, &t.resource).as_deref() == Some(topic));
        match found {
            Some(t) => Ok(t.config.unwrap_or(TopicConfig::at_least_once())),
            None => Err(self.not_found(&format!("topic {topic:?}"))),
        }
    }

    fn not_found(&self, what: &str) -> Error {
        let prefix = &self.bus.settings().name_prefix;
        Error::new(
            ErrorKind::NotFound,
            format!(
                "no {what} under the name prefix {prefix:?} on the {} backend (`tidings ls` lists what there is)",
                self.bus.backend_name()
            ),
        )
    }

    async fn target(&self, topic: &str, sub: &str) -> Result<Target> {
        let runner = self.bus.runners().into_iter().find(|r| r.key.0 == topic && r.key.1 == sub);
        let Some(admin) = &self.admin else {
            return runner
                .map(Target::Local)
                .ok_or_else(|| self.not_found(&format!("subscription {sub:?} of topic {topic:?}")));
        };
        if let Some(r) = runner {
            return Ok(Target::Admin(admin.clone(), Box::new(r.spec.clone())));
        }
        let settings = self.bus.settings();
        for t in self.listing().await? {
            if logical_topic(settings, &t.resource).as_deref() != Some(topic) {
                continue;
            }
            for s in &t.subscriptions {
                if logical_subscription(settings, topic, &s.resource).as_deref() == Some(sub) {
                    let spec = SubscriptionSpec {
                        topic: TopicSpec {
                            name: topic.to_string(),
                            resource: t.resource.clone(),
                            config: t.config.unwrap_or(TopicConfig::at_least_once()),
                        },
                        name: sub.to_string(),
                        resource: s.resource.clone(),
                        config: SubscriptionConfig::default(),
                        batch: false,
                    };
                    return Ok(Target::Admin(admin.clone(), Box::new(spec)));
                }
            }
        }
        Err(self.not_found(&format!("subscription {sub:?} of topic {topic:?}")))
    }

    /// Figures of one subscription.
    pub async fn stats(&self, topic: &str, sub: &str) -> Result<SubscriptionStats> {
        let target = self.target(topic, sub).await?;
        let backlog = match &target {
            Target::Admin(a, spec) => return retry::call("stats", None, || a.stats(spec)).await,
            Target::Local(r) => retry::call("backlog", None, || r.driver.backlog_detail()).await?,
        };
        let dead = dead_letter::peek(&*self.queue(&target).await?, usize::MAX).await?.len() as u64;
        Ok(SubscriptionStats {
            backlog: backlog.total,
            scheduled: backlog.scheduled,
            in_flight: None,
            oldest_unacked: None,
            dead_letters: Some(dead),
        })
    }

    /// The dead-letter queue of a subscription: its backend's one dead-letter surface.
    async fn queue(&self, target: &Target) -> Result<Arc<dyn DeadLetters>> {
        let q = match target {
            Target::Admin(a, spec) => retry::call("dead_letter_queue", None, || a.dead_letter_queue(spec)).await?,
            Target::Local(r) => r.driver.clone().dead_letter_queue(),
        };
        q.ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("the {} backend offers no dead-letter queue for this subscription", self.bus.backend_name()),
            )
        })
    }

    /// Up to `max` dead letters of a subscription, oldest first, without removing them.
    pub async fn dead_letters(&self, topic: &str, sub: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let q = self.queue(&self.target(topic, sub).await?).await?;
        dead_letter::peek(&*q, max).await
    }

    /// Moves the selected dead letters back into the subscription (attempt counter reset), one at a time, each
    /// after `pace` allows it; returns how many moved. A copy is sent before its dead letter is removed.
    pub async fn redrive(&self, topic: &str, sub: &str, select: Select<'_>, pace: &Pace) -> Result<u64> {
        let q = self.queue(&self.target(topic, sub).await?).await?;
        let moved = dead_letter::sweep(&*q, select, pace, Move::Restore).await?;
        ::metrics::counter!(crate::metrics::REDRIVEN, "backend" => self.bus.backend_name().to_string(),
            "topic" => topic.to_string(), "subscription" => sub.to_string())
        .increment(moved);
        Ok(moved)
    }

    /// Deletes the selected dead letters for good, each after `pace` allows it; returns how many went.
    pub async fn purge(&self, topic: &str, sub: &str, select: Select<'_>, pace: &Pace) -> Result<u64> {
        let q = self.queue(&self.target(topic, sub).await?).await?;
        dead_letter::sweep(&*q, select, pace, Move::Delete).await
    }

    /// Checks a subscription's resources without creating or receiving anything; see [`Admin::provisioned`].
    pub async fn provisioned(&self, spec: &SubscriptionSpec) -> Result<()> {
        match &self.admin {
            Some(a) => retry::call("provisioned", None, || a.provisioned(spec)).await,
            None => Ok(()),
        }
    }

    /// Whether the application's identity holds the permissions `topology` needs; see [`Admin::permissions`].
    pub async fn permissions(&self, topology: &crate::topology::Topology) -> Vec<Check> {
        match &self.admin {
            Some(a) => a.permissions(topology).await,
            None => vec![Check::skipped("permissions", "the in-memory bus has no permissions")],
        }
    }

    /// Deletes a subscription and its dead-letter queue (backends with an [`Admin`] only).
    pub async fn delete_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        match &self.admin {
            Some(a) => a.delete_subscription(spec).await,
            None => Err(Error::new(ErrorKind::Unsupported, "the in-memory bus has no subscriptions to delete")),
        }
    }
}
