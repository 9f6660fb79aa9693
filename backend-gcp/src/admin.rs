//! The operator SPI on Pub/Sub: topics and subscriptions from `ListTopics` / `ListSubscriptions`; a subscription's
//! dead letters offered as the one dead-letter surface ([`crate::dlq`]: unary pulls over REST, released when they
//! stay), which core's operator sweeps, as a running subscription's `dead_letters` and `redrive` do.
//!
//! Pub/Sub's admin API tells no backlog: it is in Cloud Monitoring (`subscription/num_undelivered_messages`,
//! `oldest_unacked_message_age`), which the emulator does not have and tidings does not query.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use google_cloud_pubsub::model::Subscription;
use tidings_core::admin::{Admin, Check, Orphan, SubscriptionResource, SubscriptionStats, TopicResource, Unknown};
use tidings_core::backend::{DeadLetters, SubscriptionSpec};
use tidings_core::{Result, TopicConfig};

use crate::dlq::GcpDeadLetters;
use crate::error::gcp;
use crate::provision::{paths, Paths};
use crate::Shared;

/// Operator access to Pub/Sub topics and subscriptions.
#[derive(Debug)]
pub(crate) struct GcpAdmin {
    pub(crate) s: Arc<Shared>,
}

fn short(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What Pub/Sub names the topic of a subscription whose topic was deleted.
const DELETED_TOPIC: &str = "_deleted-topic_";

/// Dead-letter topics and subscriptions under `prefix` whose subscription is gone. A topic `<sub>-dlq` is a
/// dead-letter topic left behind when no subscription names it as its dead-letter topic, the subscription `<sub>`
/// does not exist, and it looks like one: it carries its own dead-letter subscription `<sub>-dlq`, or `<sub>` follows
/// the naming scheme (`<topic>--<subscription>`). Its subscriptions, and a `<sub>-dlq` subscription whose topic was
/// deleted, are left behind with it.
fn orphans_of(prefix: &str, topics: &[String], subs: &[Subscription]) -> Vec<Orphan> {
    let dead_letter_topics: HashSet<&str> =
        subs.iter().filter_map(|s| s.dead_letter_policy.as_ref().map(|d| d.dead_letter_topic.as_str())).collect();
    let sub_names: HashSet<&str> = subs.iter().map(|s| short(&s.name)).collect();
    let mut out = Vec::new();
    for topic in topics {
        let name = short(topic);
        let Some(base) = name.strip_suffix("-dlq") else { continue };
        if !name.starts_with(prefix) || dead_letter_topics.contains(topic.as_str()) || sub_names.contains(base) {
            continue;
        }
        let attached: Vec<&Subscription> = subs.iter().filter(|s| &s.topic == topic).collect();
        if !attached.iter().any(|s| short(&s.name) == name) && !base.contains("--") {
            continue;
        }
        out.push(Orphan::new("dead-letter topic", name, base));
        out.extend(attached.iter().map(|s| Orphan::new("dead-letter subscription", short(&s.name), base)));
    }
    for s in subs.iter().filter(|s| s.topic == DELETED_TOPIC) {
        let name = short(&s.name);
        if let Some(base) = name.strip_suffix("-dlq").filter(|b| name.starts_with(prefix) && !sub_names.contains(b)) {
            out.push(Orphan::new("dead-letter subscription", name, base));
        }
    }
    out.sort_by(|a, b| (&a.subscription, &a.kind, &a.resource).cmp(&(&b.subscription, &b.kind, &b.resource)));
    out
}

impl GcpAdmin {
    pub(crate) fn new(s: Arc<Shared>) -> Self {
        Self { s }
    }

    /// The dead-letter queue of `spec` (its redrive copies go through a publisher of its own, made at the first).
    fn queue(&self, spec: &SubscriptionSpec) -> GcpDeadLetters {
        let p = paths(&self.s, spec);
        GcpDeadLetters::new(self.s.clone(), &p, &spec.name, spec.topic.config.ordered, None, None)
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        let project = format!("projects/{}", self.s.project);
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            self.s.calls.count("pubsub:ListSubscriptions");
            let page = self
                .s
                .subs
                .list_subscriptions()
                .set_project(&project)
                .set_page_token(&token)
                .send()
                .await
                .map_err(|e| gcp("ListSubscriptions", &project, e))?;
            out.extend(page.subscriptions);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    async fn topics(&self) -> Result<Vec<String>> {
        let project = format!("projects/{}", self.s.project);
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            self.s.calls.count("pubsub:ListTopics");
            let page = self
                .s
                .topics
                .list_topics()
                .set_project(&project)
                .set_page_token(&token)
                .send()
                .await
                .map_err(|e| gcp("ListTopics", &project, e))?;
            out.extend(page.topics.into_iter().map(|t| t.name));
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    async fn delete(&self, what: &str, path: &str) -> Result<()> {
        self.s.calls.count(if what == "topic" { "pubsub:DeleteTopic" } else { "pubsub:DeleteSubscription" });
        let r = if what == "topic" {
            self.s.topics.delete_topic().set_topic(path).send().await
        } else {
            self.s.subs.delete_subscription().set_subscription(path).send().await
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if crate::error::code(&e).as_deref() == Some("NotFound") => Ok(()),
            Err(e) => Err(gcp("Delete", path, e)),
        }
    }
}

#[async_trait]
impl Admin for GcpAdmin {
    async fn list(&self, prefix: &str) -> Result<Vec<TopicResource>> {
        let subs = self.subscriptions().await?;
        let topics = self.topics().await?;
        let dlq_topics: Vec<String> =
            subs.iter().filter_map(|s| s.dead_letter_policy.as_ref().map(|d| d.dead_letter_topic.clone())).collect();
        // Left behind by a deleted subscription: `orphans` reports them; they are not the application's topics.
        let orphans: HashSet<String> = orphans_of(prefix, &topics, &subs)
            .into_iter()
            .filter(|o| o.kind == "dead-letter topic")
            .map(|o| o.resource)
            .collect();
        let mut by_topic: HashMap<String, Vec<&Subscription>> = HashMap::new();
        for s in &subs {
            by_topic.entry(s.topic.clone()).or_default().push(s);
        }
        let mut out = Vec::new();
        for topic in topics {
            let name = short(&topic);
            if !name.starts_with(prefix) || dlq_topics.contains(&topic) || orphans.contains(name) {
                continue;
            }
            let subs = by_topic.get(&topic).cloned().unwrap_or_default();
            let exactly_once = subs.iter().any(|s| s.enable_exactly_once_delivery);
            let ordered = subs.iter().any(|s| s.enable_message_ordering);
            let base = if exactly_once { TopicConfig::exactly_once() } else { TopicConfig::at_least_once() };
            let mut subscriptions: Vec<SubscriptionResource> = subs
                .iter()
                .map(|s| SubscriptionResource {
                    resource: short(&s.name).to_string(),
                    dead_letter_resource: s.dead_letter_policy.as_ref().map(|_| format!("{}-dlq", short(&s.name))),
                })
                .collect();
            subscriptions.sort_by(|a, b| a.resource.cmp(&b.resource));
            out.push(TopicResource {
                resource: name.to_string(),
                config: Some(if ordered { base.ordered() } else { base }),
                subscriptions,
            });
        }
        out.sort_by(|a, b| a.resource.cmp(&b.resource));
        Ok(out)
    }

    async fn orphans(&self, prefix: &str) -> Result<Vec<Orphan>> {
        let subs = self.subscriptions().await?;
        Ok(orphans_of(prefix, &self.topics().await?, &subs))
    }

    async fn stats(&self, spec: &SubscriptionSpec) -> Result<SubscriptionStats> {
        let dead_letters = self.queue(spec).count().await?;
        Ok(SubscriptionStats { dead_letters: Some(dead_letters), ..Default::default() })
    }

    async fn dead_letter_queue(&self, spec: &SubscriptionSpec) -> Result<Option<Arc<dyn DeadLetters>>> {
        Ok(Some(Arc::new(self.queue(spec))))
    }

    async fn delete_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        let Paths { subscription, dlq_topic, dlq_subscription, .. } = paths(&self.s, spec);
        self.delete("subscription", &subscription).await?;
        self.delete("subscription", &dlq_subscription).await?;
        self.delete("topic", &dlq_topic).await
    }

    async fn provisioned(&self, spec: &SubscriptionSpec) -> Result<()> {
        crate::check_resource_name(&spec.topic.name, &spec.topic.resource)?;
        crate::provision::subscription(&self.s, spec).await.map(drop)
    }

    async fn permissions(&self, topology: &tidings_core::topology::Topology) -> Vec<Check> {
        crate::iam::permissions(&self.s, topology).await
    }

    fn unknown(&self) -> Vec<Unknown> {
        let monitoring = "Pub/Sub reports it to Cloud Monitoring only (subscription/num_undelivered_messages, \
                          oldest_unacked_message_age), which tidings does not query";
        vec![
            ("backlog", monitoring),
            ("in_flight", monitoring),
            ("oldest_unacked", monitoring),
            (
                "scheduled",
                "delayed messages are held by the subscribing processes (lease kept alive until due), and Pub/Sub \
                 counts nothing per subscription",
            ),
            (
                "rates",
                "Pub/Sub keeps message rates in Cloud Monitoring only; the dashboard derives acked and published rates \
                 from the application's metrics",
            ),
            (
                "dead_letters",
                "counted by pulling the dead-letter subscription: dead letters leased to a running application \
                 are not seen",
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use google_cloud_pubsub::model::{DeadLetterPolicy, Subscription};

    use super::orphans_of;

    fn sub(name: &str, topic: &str, dlq: Option<&str>) -> Subscription {
        let s = Subscription::new().set_name(format!("projects/p/subscriptions/{name}")).set_topic(topic.to_string());
        match dlq {
            Some(d) => s.set_dead_letter_policy(
                DeadLetterPolicy::new().set_dead_letter_topic(format!("projects/p/topics/{d}")),
            ),
            None => s,
        }
    }

    #[test]
    fn a_dead_letter_topic_whose_subscription_is_gone_is_an_orphan_not_an_application_topic() {
        let topics: Vec<String> =
            ["dev-orders", "dev-orders--billing-dlq", "dev-orders--shipping-dlq", "dev-audit-dlq"]
                .iter()
                .map(|t| format!("projects/p/topics/{t}"))
                .collect();
        let subs = [
            sub("dev-orders--billing", "projects/p/topics/dev-orders", Some("dev-orders--billing-dlq")),
            sub("dev-orders--billing-dlq", "projects/p/topics/dev-orders--billing-dlq", None),
            // orders/shipping was deleted: its dead-letter topic and subscription stay.
            sub("dev-orders--shipping-dlq", "projects/p/topics/dev-orders--shipping-dlq", None),
            // An application topic that happens to end in -dlq, with a subscription of its own: not an orphan.
            sub("dev-audit-dlq--reader", "projects/p/topics/dev-audit-dlq", None),
            sub("dev-orders--gone-dlq", super::DELETED_TOPIC, None),
        ];
        let found: Vec<(String, String, String)> =
            orphans_of("dev-", &topics, &subs).into_iter().map(|o| (o.kind, o.resource, o.subscription)).collect();
        let o = |k: &str, r: &str, s: &str| (k.to_string(), r.to_string(), s.to_string());
        assert_eq!(
            found,
            [
                o("dead-letter subscription", "dev-orders--gone-dlq", "dev-orders--gone"),
                o("dead-letter subscription", "dev-orders--shipping-dlq", "dev-orders--shipping"),
                o("dead-letter topic", "dev-orders--shipping-dlq", "dev-orders--shipping"),
            ]
        );
        assert!(orphans_of("prod-", &topics, &subs).is_empty(), "only under the prefix");
    }
}
