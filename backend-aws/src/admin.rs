//! The operator SPI on SNS + SQS: topics from `ListTopics`, their queues from `ListSubscriptionsByTopic`, figures
//! from `GetQueueAttributes`, dead letters through the subscription's dead-letter queue (`dlq.rs`), which core's sweep
//! reads, redrives and purges.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName as Q;
use tidings_core::admin::{Admin, Check, Orphan, SubscriptionResource, SubscriptionStats, TopicResource, Unknown};
use tidings_core::backend::{DeadLetters, SubscriptionSpec};
use tidings_core::{Error, ErrorKind, Result, TopicConfig};

use crate::error::sdk;
use crate::names::{fit, MAX_QUEUE_NAME};
use crate::provision::{queue_attributes, queue_names, topic_name, SubRes};
use crate::subscribe::AwsSubscription;
use crate::Shared;

/// The SNS and SQS actions the application needs in a provisioning mode (the book's AWS page, Permissions).
fn actions(mode: tidings_core::backend::cloud::Provisioning) -> (Vec<&'static str>, Vec<&'static str>) {
    use tidings_core::backend::cloud::Provisioning;
    let mut sns = vec!["sns:Publish"];
    let mut sqs = vec![
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
    ];
    match mode {
        Provisioning::Auto => {
            sns.extend(["sns:CreateTopic", "sns:Subscribe"]);
            sqs.extend(["sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:SetQueueAttributes"]);
        }
        Provisioning::Verify => {
            sns.extend(["sns:ListTopics", "sns:GetTopicAttributes", "sns:ListSubscriptionsByTopic"]);
            sns.push("sns:GetSubscriptionAttributes");
            sqs.push("sqs:GetQueueUrl");
        }
        Provisioning::Off => {}
    }
    (sns, sqs)
}

/// Operator access to SNS topics and SQS queues.
#[derive(Debug)]
pub(crate) struct AwsAdmin {
    pub(crate) s: Arc<Shared>,
}

fn last_segment(arn: &str) -> &str {
    arn.rsplit(':').next().unwrap_or(arn)
}

/// A queue's name from its URL.
fn last_segment_of_url(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

impl AwsAdmin {
    async fn topic_arns(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pages = self.s.sns.list_topics().into_paginator().send();
        while let Some(page) = pages.next().await {
            self.s.calls.count("sns:ListTopics");
            let page = page.map_err(|e| sdk("ListTopics", prefix, e))?;
            for t in page.topics() {
                let arn = t.topic_arn().unwrap_or_default();
                if last_segment(arn).starts_with(prefix) {
                    out.push(arn.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn queue_arns_of(&self, topic_arn: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut pages = self.s.sns.list_subscriptions_by_topic().topic_arn(topic_arn).into_paginator().send();
        while let Some(page) = pages.next().await {
            self.s.calls.count("sns:ListSubscriptionsByTopic");
            let page = page.map_err(|e| sdk("ListSubscriptionsByTopic", topic_arn, e))?;
            for sub in page.subscriptions() {
                if sub.protocol() == Some("sqs") {
                    let endpoint = sub.endpoint().unwrap_or_default().to_string();
                    out.push((endpoint, sub.subscription_arn().unwrap_or_default().to_string()));
                }
            }
        }
        Ok(out)
    }

    async fn queue_url(&self, name: &str) -> Result<String> {
        self.s.calls.count("sqs:GetQueueUrl");
        let out = self.s.sqs.get_queue_url().queue_name(name).send().await.map_err(|e| {
            let e = sdk("GetQueueUrl", name, e);
            match e.kind() {
                ErrorKind::NotFound => {
                    Error::new(ErrorKind::NotFound, format!("aws: SQS queue {name:?} does not exist"))
                }
                _ => e,
            }
        })?;
        Ok(out.queue_url().unwrap_or_default().to_string())
    }

    /// The subscription's queues (from config for `provisioning = "off"` setups, else by name).
    async fn driver(&self, spec: &SubscriptionSpec) -> Result<(AwsSubscription, SubRes)> {
        let key = format!("{}.{}", spec.topic.name, spec.name);
        let c = &self.s.config;
        let (name, dlq_name) = queue_names(spec);
        let queue_url = match c.queue_urls.get(&key) {
            Some(u) => u.clone(),
            None => self.queue_url(&name).await?,
        };
        let dlq_url = match c.dlq_urls.get(&key) {
            Some(u) => u.clone(),
            None => self.queue_url(&dlq_name).await?,
        };
        let fifo = name.ends_with(".fifo");
        let res = SubRes { queue_url, dlq_url, fifo };
        Ok((AwsSubscription::new(self.s.clone(), res.clone(), spec.topic.config.ordered), res))
    }

    /// URLs of the queues whose names start with `prefix`.
    async fn queue_urls(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pages = self.s.sqs.list_queues().queue_name_prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            self.s.calls.count("sqs:ListQueues");
            out.extend(page.map_err(|e| sdk("ListQueues", prefix, e))?.queue_urls().iter().cloned());
        }
        out.sort();
        Ok(out)
    }

    /// Whether some queue names `dlq_url` as its dead-letter queue (its redrive policy).
    async fn has_source_queue(&self, dlq_url: &str) -> Result<bool> {
        self.s.calls.count("sqs:ListDeadLetterSourceQueues");
        let out = self
            .s
            .sqs
            .list_dead_letter_source_queues()
            .queue_url(dlq_url)
            .max_results(1)
            .send()
            .await
            .map_err(|e| sdk("ListDeadLetterSourceQueues", dlq_url, e))?;
        Ok(!out.queue_urls().is_empty())
    }

    async fn delete_queue(&self, url: &str) -> Result<()> {
        self.s.calls.count("sqs:DeleteQueue");
        self.s.sqs.delete_queue().queue_url(url).send().await.map_err(|e| sdk("DeleteQueue", url, e))?;
        Ok(())
    }
}

#[async_trait]
impl Admin for AwsAdmin {
    async fn list(&self, prefix: &str) -> Result<Vec<TopicResource>> {
        let mut out = Vec::new();
        for arn in self.topic_arns(prefix).await? {
            let name = last_segment(&arn);
            let fifo = name.ends_with(".fifo");
            let config = if fifo { TopicConfig::exactly_once().ordered() } else { TopicConfig::at_least_once() };
            let mut subscriptions = Vec::new();
            for (queue_arn, _) in self.queue_arns_of(&arn).await? {
                let queue = last_segment(&queue_arn);
                let resource = queue.strip_suffix(".fifo").unwrap_or(queue).to_string();
                let dlq = fit(&resource, "-dlq", fifo, MAX_QUEUE_NAME);
                subscriptions.push(SubscriptionResource { resource, dead_letter_resource: Some(dlq) });
            }
            subscriptions.sort_by(|a, b| a.resource.cmp(&b.resource));
            subscriptions.dedup();
            out.push(TopicResource {
                resource: name.strip_suffix(".fifo").unwrap_or(name).to_string(),
                config: Some(config),
                subscriptions,
            });
        }
        Ok(out)
    }

    /// Dead-letter queues (`<queue>-dlq`) whose queue is gone: neither `<queue>` exists nor does any queue name it
    /// in its redrive policy (asked only when `<queue>` is not there, as for names shortened with a hash).
    async fn orphans(&self, prefix: &str) -> Result<Vec<Orphan>> {
        let urls = self.queue_urls(prefix).await?;
        let names: HashSet<&str> = urls.iter().map(|u| last_segment_of_url(u)).collect();
        let mut out = Vec::new();
        for url in &urls {
            let name = last_segment_of_url(url);
            let fifo = name.ends_with(".fifo");
            let Some(base) = name.strip_suffix(".fifo").unwrap_or(name).strip_suffix("-dlq") else { continue };
            let queue = if fifo { format!("{base}.fifo") } else { base.to_string() };
            if names.contains(queue.as_str()) || self.has_source_queue(url).await? {
                continue;
            }
            out.push(Orphan::new("dead-letter queue", name, queue));
        }
        Ok(out)
    }

    async fn stats(&self, spec: &SubscriptionSpec) -> Result<SubscriptionStats> {
        let (_, res) = self.driver(spec).await?;
        let n = |a: &std::collections::HashMap<Q, String>, k: Q| a.get(&k).and_then(|v| v.parse::<u64>().ok());
        let q = queue_attributes(&self.s, &res.queue_url).await?;
        let d = queue_attributes(&self.s, &res.dlq_url).await?;
        let visible = n(&q, Q::ApproximateNumberOfMessages);
        let in_flight = n(&q, Q::ApproximateNumberOfMessagesNotVisible);
        let delayed = n(&q, Q::ApproximateNumberOfMessagesDelayed);
        let backlog = match (visible, in_flight, delayed) {
            (Some(a), Some(b), c) => Some(a + b + c.unwrap_or(0)),
            _ => None,
        };
        let dead = match (n(&d, Q::ApproximateNumberOfMessages), n(&d, Q::ApproximateNumberOfMessagesNotVisible)) {
            (Some(a), b) => Some(a + b.unwrap_or(0)),
            _ => None,
        };
        // Delayed messages are held by the subscribing processes (invisible until due): SQS counts them not visible.
        Ok(SubscriptionStats { backlog, scheduled: None, in_flight, oldest_unacked: None, dead_letters: dead })
    }

    async fn dead_letter_queue(&self, spec: &SubscriptionSpec) -> Result<Option<Arc<dyn DeadLetters>>> {
        Ok(Some(Arc::new(self.driver(spec).await?.0)))
    }

    async fn delete_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        let (_, res) = self.driver(spec).await?;
        let queue_arn = queue_attributes(&self.s, &res.queue_url).await?.remove(&Q::QueueArn).unwrap_or_default();
        let topic = topic_name(&spec.topic);
        for arn in self.topic_arns(&topic).await?.iter().filter(|a| last_segment(a) == topic) {
            for (endpoint, sub_arn) in self.queue_arns_of(arn).await? {
                if endpoint == queue_arn {
                    self.s.calls.count("sns:Unsubscribe");
                    self.s
                        .sns
                        .unsubscribe()
                        .subscription_arn(&sub_arn)
                        .send()
                        .await
                        .map_err(|e| sdk("Unsubscribe", &sub_arn, e))?;
                }
            }
        }
        self.delete_queue(&res.queue_url).await?;
        self.delete_queue(&res.dlq_url).await
    }

    async fn provisioned(&self, spec: &SubscriptionSpec) -> Result<()> {
        let topic = crate::provision::topic(&self.s, &spec.topic).await?;
        crate::provision::subscription(&self.s, spec, &topic).await.map(drop)
    }

    async fn permissions(&self, topology: &tidings_core::topology::Topology) -> Vec<Check> {
        let (sns, sqs) = actions(self.s.config.provisioning);
        #[cfg(feature = "iam-check")]
        {
            crate::iam::permissions(&self.s, topology, &sns, &sqs).await
        }
        #[cfg(not(feature = "iam-check"))]
        {
            let _ = topology;
            vec![Check::skipped(
                "permissions",
                format!(
                    "not checked: this build has no IAM policy simulator (tidings-aws feature iam-check); unchecked: {} \
                     and {}",
                    sns.join(", "),
                    sqs.join(", ")
                ),
            )]
        }
    }

    fn unknown(&self) -> Vec<Unknown> {
        vec![
            (
                "oldest_unacked",
                "SQS reports the oldest message's age to CloudWatch only (ApproximateAgeOfOldestMessage)",
            ),
            (
                "rates",
                "SNS and SQS keep message rates in CloudWatch only; the dashboard derives backlog and DLQ changes from \
                 successive samples, and acked and published rates from the application's metrics",
            ),
            (
                "scheduled",
                "delayed messages are held by the subscribing processes (invisible in their queue until due), so SQS \
                 counts them not visible, in flight with the delivered ones",
            ),
        ]
    }
}
