//! The operator SPI on Pub/Sub: topics and subscriptions from `ListTopics` / `ListSubscriptions`, dead letters read
//! by pulling the dead-letter subscription and nacking what stays, redrive as a copy published to the topic
//! (addressed to this subscription; the topic's other subscriptions ack and skip it) and then an ack of the dead
//! letter: an interruption leaves each message in the dead-letter subscription, back in the subscription, or in both,
//! never in neither.
//!
//! Pub/Sub's admin API tells no backlog: it is in Cloud Monitoring (`subscription/num_undelivered_messages`,
//! `oldest_unacked_message_age`), which the emulator does not have and tidings does not query.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::model::{Message as GMessage, Subscription};
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownBehavior};
use tidings_core::admin::{
    Admin, Check, Pace, Select, SubscriptionResource, SubscriptionStats, TopicResource, Unknown,
};
use tidings_core::backend::{OutgoingMessage, SubscriptionSpec};
use tidings_core::{DeadLetter, Result, TopicConfig};

use crate::error::gcp;
use crate::meta::{micros, trace_of, Meta};
use crate::provision::{paths, Paths};
use crate::publish::to_message;
use crate::subscribe::{dead_letter_of, id_of, meta_of};
use crate::Shared;

/// How long a pull waits for the first message of a dead-letter subscription (a stream takes a moment to start).
const FIRST_MESSAGE: Duration = Duration::from_secs(3);
/// A pull ends after this long without a new message.
const QUIET: Duration = Duration::from_millis(800);
/// Most dead letters one pull holds (and so the most `stats` counts).
const MAX_PULL: usize = 10_000;

/// Operator access to Pub/Sub topics and subscriptions.
#[derive(Debug)]
pub(crate) struct GcpAdmin {
    pub(crate) s: Arc<Shared>,
}

fn short(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Messages pulled from a subscription and held until settled; the stream shuts down (flushing acks, nacking the
/// rest) when dropped through [`Pulled::finish`].
struct Pulled {
    messages: Vec<(GMessage, Handler)>,
    token: google_cloud_pubsub::subscriber::ShutdownToken,
    /// Dropping the stream shuts it down at once (nacking everything), so it lives until `finish`.
    stream: MessageStream,
}

impl Pulled {
    /// Nacks what is still held, then shuts the stream down (which flushes the acks and nacks). A shutdown first
    /// would ignore the nacks of messages already handed out, leaving them leased until their deadline; a second
    /// pull in the same process may still miss messages nacked here (they can come straight back to this stream).
    async fn finish(self) {
        for (_, h) in self.messages {
            h.nack();
        }
        self.token.shutdown().await;
        drop(self.stream);
    }
}

impl GcpAdmin {
    async fn pull(&self, path: &str, max: usize) -> Result<Pulled> {
        self.s.calls.count("pubsub:StreamingPull");
        let mut stream = self
            .s
            .subscriber
            .subscribe(path)
            .set_max_outstanding_messages(max.clamp(1, MAX_PULL) as i64)
            .set_max_lease_extension(Duration::from_secs(600))
            .set_shutdown_behavior(ShutdownBehavior::NackImmediately)
            .build();
        let token = stream.shutdown_token();
        let mut messages = Vec::new();
        let mut wait = FIRST_MESSAGE;
        while messages.len() < max {
            match tokio::time::timeout(wait, stream.next()).await {
                Ok(Some(Ok(pair))) => messages.push(pair),
                Ok(Some(Err(e))) => {
                    let pulled = Pulled { messages, token, stream };
                    pulled.finish().await;
                    return Err(gcp("StreamingPull", path, e));
                }
                Ok(None) | Err(_) => break,
            }
            wait = QUIET;
        }
        Ok(Pulled { messages, token, stream })
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

    /// Pulls the dead-letter subscription once: each selected message is redriven (copy published first) or only
    /// acked; the rest are nacked.
    async fn sweep(&self, spec: &SubscriptionSpec, select: Select<'_>, pace: &Pace, redrive: bool) -> Result<u64> {
        let p = paths(&self.s, spec);
        let publisher = self.s.base.publisher(p.topic.clone()).build();
        let pulled = self.pull(&p.dlq_subscription, MAX_PULL).await?;
        let Pulled { messages, token, stream } = pulled;
        let mut done = 0;
        let mut rest = Vec::new();
        let mut result = Ok(());
        let mut iter = messages.into_iter();
        for (m, h) in iter.by_ref() {
            let d = dead_letter_of(&m);
            if !select(&d) {
                rest.push((m, h));
                continue;
            }
            if !pace.wait().await {
                rest.push((m, h));
                break;
            }
            if redrive {
                let out = OutgoingMessage::new(
                    d.id.clone(),
                    d.payload.clone(),
                    d.attributes.clone(),
                    d.ordering_key.as_deref().map(Into::into),
                    d.publish_time,
                );
                let meta = Meta {
                    id: d.id.to_string(),
                    ts: micros(d.publish_time),
                    target: Some(spec.name.clone()),
                    trace: trace_of(&m.attributes, meta_of(&m).as_ref()),
                    ..Default::default()
                };
                let google_trace = self.s.config.google_trace_attributes;
                let sent = publisher.publish(to_message(&out, meta, spec.topic.config.ordered, google_trace)).await;
                if let Err(e) = sent {
                    rest.push((m, h));
                    result = Err(tidings_core::Error::backend(
                        format!("gcp: publishing the redrive copy of {} to {} failed: {e}", d.id, p.topic),
                        true,
                    ));
                    break;
                }
            }
            h.ack();
            pace.done();
            done += 1;
        }
        rest.extend(iter);
        Pulled { messages: rest, token, stream }.finish().await;
        result.map(|()| done)
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
        let dlq_topics: Vec<String> =
            subs.iter().filter_map(|s| s.dead_letter_policy.as_ref().map(|d| d.dead_letter_topic.clone())).collect();
        let mut by_topic: HashMap<String, Vec<&Subscription>> = HashMap::new();
        for s in &subs {
            by_topic.entry(s.topic.clone()).or_default().push(s);
        }
        let mut out = Vec::new();
        for topic in self.topics().await? {
            let name = short(&topic);
            if !name.starts_with(prefix) || dlq_topics.contains(&topic) {
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

    async fn stats(&self, spec: &SubscriptionSpec) -> Result<SubscriptionStats> {
        let p = paths(&self.s, spec);
        let pulled = self.pull(&p.dlq_subscription, MAX_PULL).await?;
        let mut ids: Vec<String> = pulled.messages.iter().map(|(m, _)| id_of(m, meta_of(m).as_ref())).collect();
        pulled.finish().await;
        ids.sort();
        ids.dedup();
        Ok(SubscriptionStats { dead_letters: Some(ids.len() as u64), ..Default::default() })
    }

    async fn dead_letters(&self, spec: &SubscriptionSpec, max: usize) -> Result<Vec<DeadLetter>> {
        let p = paths(&self.s, spec);
        let pulled = self.pull(&p.dlq_subscription, MAX_PULL).await?;
        let mut out: Vec<DeadLetter> = Vec::new();
        for (m, _) in &pulled.messages {
            let d = dead_letter_of(m);
            if !out.iter().any(|x| x.id == d.id) {
                out.push(d);
            }
        }
        pulled.finish().await;
        out.sort_by_key(|d| d.dead_lettered_at);
        out.truncate(max);
        Ok(out)
    }

    async fn redrive(&self, spec: &SubscriptionSpec, select: Select<'_>, pace: &Pace) -> Result<u64> {
        self.sweep(spec, select, pace, true).await
    }

    async fn purge(&self, spec: &SubscriptionSpec, select: Select<'_>, pace: &Pace) -> Result<u64> {
        self.sweep(spec, select, pace, false).await
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
            ("rates", "Pub/Sub reports message rates to Cloud Monitoring only"),
            (
                "dead_letters",
                "counted by pulling the dead-letter subscription: dead letters leased to a running application \
                 are not seen",
            ),
        ]
    }
}
