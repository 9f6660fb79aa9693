//! Provisioning: topic = SNS topic; subscription = SQS queue subscribed with raw delivery, a queue policy that lets
//! only its topic send, and a `RedrivePolicy` to a dead-letter queue. Ordered or exactly-once topics are FIFO.
//! `auto` creates what is missing (idempotently) and converges settings; `verify` only reads and reports differences;
//! `off` takes ARNs and URLs from config.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName as Q;
use serde_json::json;
use tidings_core::backend::time::secs_ceil;
use tidings_core::backend::{SubscriptionSpec, TopicSpec};
use tidings_core::{Error, ErrorKind, Result, TopicConfig};

use crate::config::Provisioning;
use crate::error::sdk;
use crate::names::{fit, MAX_QUEUE_NAME, MAX_TOPIC_NAME};
use crate::Shared;

/// SQS keeps messages at most 14 days.
const MAX_RETENTION: u64 = 1_209_600;
/// SQS `maxReceiveCount` is at most 1000.
const MAX_RECEIVE_COUNT: u32 = 1000;

/// Whether a topic needs FIFO (ordering or de-duplication).
pub fn is_fifo(config: TopicConfig) -> bool {
    config.ordered || config.is_exactly_once()
}

/// An SNS topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicRes {
    pub arn: String,
    pub fifo: bool,
}

/// A subscription's queues.
#[derive(Debug, Clone)]
pub(crate) struct SubRes {
    pub queue_url: String,
    pub dlq_url: String,
    pub fifo: bool,
}

/// The SNS topic name of a topic (prefix and overrides applied, `.fifo` when needed).
pub fn topic_name(spec: &TopicSpec) -> String {
    fit(&spec.resource, "", is_fifo(spec.config), MAX_TOPIC_NAME)
}

/// The SQS queue names of a subscription and of its dead-letter queue.
pub fn queue_names(spec: &SubscriptionSpec) -> (String, String) {
    let fifo = is_fifo(spec.topic.config);
    (fit(&spec.resource, "", fifo, MAX_QUEUE_NAME), fit(&spec.resource, "-dlq", fifo, MAX_QUEUE_NAME))
}

/// The queue policy: only `topic_arn` may send to `queue_arn`.
pub fn queue_policy(queue_arn: &str, topic_arn: &str) -> serde_json::Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "tidings-topic-only",
            "Effect": "Allow",
            "Principal": { "Service": "sns.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": topic_arn } }
        }]
    })
}

/// `maxReceiveCount` of the redrive policy: one more receive than the runtime's attempts, so SQS only dead-letters
/// what the runtime could not (a consumer that crashes on every delivery). `None` for infinite retries.
pub fn max_receive_count(spec: &SubscriptionSpec) -> Option<u32> {
    spec.config.retry.max_attempts().map(|a| a.saturating_add(1).min(MAX_RECEIVE_COUNT))
}

/// The settings a subscription queue must have (besides `FifoQueue` and the ARN-bearing ones).
fn queue_settings(spec: &SubscriptionSpec) -> Vec<(Q, String)> {
    let c = spec.config;
    vec![
        (Q::VisibilityTimeout, secs_ceil(c.ack_deadline).min(43_200).to_string()),
        (Q::MessageRetentionPeriod, secs_ceil(c.message_retention).clamp(60, MAX_RETENTION).to_string()),
    ]
}

fn config_key(map: &std::collections::BTreeMap<String, String>, key: &str, section: &str) -> Result<String> {
    map.get(key).cloned().ok_or_else(|| {
        Error::config(format!(
            "provisioning = \"off\" needs config key `aws.{section}.\"{key}\"` (the existing resource), which is missing"
        ))
    })
}

pub(crate) async fn topic(s: &Shared, spec: &TopicSpec) -> Result<TopicRes> {
    let fifo = is_fifo(spec.config);
    if let Some(arn) = s.config.topic_arns.get(&spec.name) {
        if s.config.provisioning == Provisioning::Verify {
            verify_topic(s, arn, fifo).await?;
        }
        return Ok(TopicRes { arn: arn.clone(), fifo });
    }
    let name = topic_name(spec);
    match s.config.provisioning {
        Provisioning::Off => Ok(TopicRes { arn: config_key(&s.config.topic_arns, &spec.name, "topic_arns")?, fifo }),
        Provisioning::Auto => {
            s.calls.count("sns:CreateTopic");
            let mut req = s.sns.create_topic().name(&name);
            if fifo {
                req = req.attributes("FifoTopic", "true").attributes("ContentBasedDeduplication", "false");
            }
            let out = req.send().await.map_err(|e| sdk("CreateTopic", &name, e))?;
            Ok(TopicRes { arn: out.topic_arn().unwrap_or_default().to_string(), fifo })
        }
        Provisioning::Verify => {
            let arn = find_topic(s, &name).await?;
            verify_topic(s, &arn, fifo).await?;
            Ok(TopicRes { arn, fifo })
        }
    }
}

async fn find_topic(s: &Shared, name: &str) -> Result<String> {
    let mut pages = s.sns.list_topics().into_paginator().send();
    while let Some(page) = pages.next().await {
        s.calls.count("sns:ListTopics");
        let page = page.map_err(|e| sdk("ListTopics", name, e))?;
        if let Some(t) = page.topics().iter().find(|t| t.topic_arn().is_some_and(|a| a.ends_with(&format!(":{name}"))))
        {
            return Ok(t.topic_arn().unwrap_or_default().to_string());
        }
    }
    Err(Error::new(ErrorKind::NotFound, format!("aws verify: SNS topic {name:?} does not exist")))
}

async fn verify_topic(s: &Shared, arn: &str, fifo: bool) -> Result<()> {
    s.calls.count("sns:GetTopicAttributes");
    let out =
        s.sns.get_topic_attributes().topic_arn(arn).send().await.map_err(|e| sdk("GetTopicAttributes", arn, e))?;
    let actual = out.attributes().and_then(|a| a.get("FifoTopic")).map(String::as_str).unwrap_or("false");
    mismatch(&format!("SNS topic {arn}"), "FifoTopic", actual, if fifo { "true" } else { "false" })
}

fn mismatch(resource: &str, setting: &str, actual: &str, declared: &str) -> Result<()> {
    if actual == declared {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Mismatch,
        format!("aws verify: {resource}: setting {setting} is {actual:?} but the code declares {declared:?}"),
    ))
}

pub(crate) async fn subscription(s: &Shared, spec: &SubscriptionSpec, topic: &TopicRes) -> Result<SubRes> {
    let key = format!("{}.{}", spec.topic.name, spec.name);
    let fifo = topic.fifo;
    let (name, dlq_name) = queue_names(spec);
    let (url, dlq_url) = match (s.config.queue_urls.get(&key), s.config.dlq_urls.get(&key)) {
        (Some(u), Some(d)) => (u.clone(), d.clone()),
        _ if s.config.provisioning == Provisioning::Off => {
            (config_key(&s.config.queue_urls, &key, "queue_urls")?, config_key(&s.config.dlq_urls, &key, "dlq_urls")?)
        }
        _ if s.config.provisioning == Provisioning::Auto => {
            let dlq_url =
                create_queue(s, &dlq_name, fifo, &[(Q::MessageRetentionPeriod, MAX_RETENTION.to_string())]).await?;
            let url = create_queue(s, &name, fifo, &[]).await?;
            (url, dlq_url)
        }
        _ => (queue_url(s, &name).await?, queue_url(s, &dlq_name).await?),
    };
    if s.config.provisioning == Provisioning::Off {
        return Ok(SubRes { queue_url: url, dlq_url, fifo });
    }
    let dlq_arn = queue_attributes(s, &dlq_url).await?.remove(&Q::QueueArn).unwrap_or_default();
    let mut attrs = queue_attributes(s, &url).await?;
    let queue_arn = attrs.remove(&Q::QueueArn).unwrap_or_default();
    let mut desired = queue_settings(spec);
    desired.push((Q::Policy, queue_policy(&queue_arn, &topic.arn).to_string()));
    if let Some(n) = max_receive_count(spec) {
        desired.push((Q::RedrivePolicy, json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": n }).to_string()));
    }
    if s.config.provisioning == Provisioning::Verify {
        let queue = format!("SQS queue {name}");
        mismatch(
            &queue,
            "FifoQueue",
            attrs.get(&Q::FifoQueue).map_or("false", String::as_str),
            if fifo { "true" } else { "false" },
        )?;
        for (k, want) in &desired {
            let have = attrs.get(k).cloned().unwrap_or_default();
            let same = match k {
                Q::Policy | Q::RedrivePolicy => same_json(&have, want),
                _ => &have == want,
            };
            if !same {
                mismatch(&queue, k.as_str(), &have, want)?;
            }
        }
        verify_subscription(s, topic, &queue_arn).await?;
    } else {
        s.calls.count("sqs:SetQueueAttributes");
        let mut req = s.sqs.set_queue_attributes().queue_url(&url);
        for (k, v) in desired {
            req = req.attributes(k, v);
        }
        req.send().await.map_err(|e| sdk("SetQueueAttributes", &name, e))?;
        s.calls.count("sns:Subscribe");
        s.sns
            .subscribe()
            .topic_arn(&topic.arn)
            .protocol("sqs")
            .endpoint(&queue_arn)
            .attributes("RawMessageDelivery", "true")
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|e| sdk("Subscribe", &name, e))?;
    }
    Ok(SubRes { queue_url: url, dlq_url, fifo })
}

fn same_json(a: &str, b: &str) -> bool {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    let norm = |v: Option<serde_json::Value>| {
        // maxReceiveCount comes back as a string from some implementations.
        v.map(|mut v| {
            if let Some(n) = v.get("maxReceiveCount").and_then(|n| n.as_str()).and_then(|n| n.parse::<u64>().ok()) {
                v["maxReceiveCount"] = json!(n);
            }
            v
        })
    };
    let (x, y) = (norm(parse(a)), norm(parse(b)));
    x.is_some() && x == y
}

async fn create_queue(s: &Shared, name: &str, fifo: bool, extra: &[(Q, String)]) -> Result<String> {
    s.calls.count("sqs:CreateQueue");
    let mut req = s.sqs.create_queue().queue_name(name);
    if fifo {
        req = req.attributes(Q::FifoQueue, "true");
    }
    for (k, v) in extra {
        req = req.attributes(k.clone(), v);
    }
    match req.send().await {
        Ok(out) => Ok(out.queue_url().unwrap_or_default().to_string()),
        // Exists with other settings: take it as is; the caller converges the settings.
        Err(e) if e.as_service_error().is_some_and(|e| e.is_queue_name_exists()) => queue_url(s, name).await,
        Err(e) => Err(sdk("CreateQueue", name, e)),
    }
}

async fn queue_url(s: &Shared, name: &str) -> Result<String> {
    s.calls.count("sqs:GetQueueUrl");
    let out = s.sqs.get_queue_url().queue_name(name).send().await.map_err(|e| {
        let e = sdk("GetQueueUrl", name, e);
        if e.kind() == ErrorKind::NotFound {
            Error::new(ErrorKind::NotFound, format!("aws verify: SQS queue {name:?} does not exist ({e})"))
        } else {
            e
        }
    })?;
    Ok(out.queue_url().unwrap_or_default().to_string())
}

pub(crate) async fn queue_attributes(s: &Shared, url: &str) -> Result<HashMap<Q, String>> {
    s.calls.count("sqs:GetQueueAttributes");
    let out = s
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(Q::All)
        .send()
        .await
        .map_err(|e| sdk("GetQueueAttributes", url, e))?;
    Ok(out.attributes().cloned().unwrap_or_default())
}

async fn verify_subscription(s: &Shared, topic: &TopicRes, queue_arn: &str) -> Result<()> {
    let mut pages = s.sns.list_subscriptions_by_topic().topic_arn(&topic.arn).into_paginator().send();
    while let Some(page) = pages.next().await {
        s.calls.count("sns:ListSubscriptionsByTopic");
        let page = page.map_err(|e| sdk("ListSubscriptionsByTopic", &topic.arn, e))?;
        for sub in page.subscriptions() {
            if sub.endpoint() == Some(queue_arn) && sub.protocol() == Some("sqs") {
                let arn = sub.subscription_arn().unwrap_or_default();
                s.calls.count("sns:GetSubscriptionAttributes");
                let out = s
                    .sns
                    .get_subscription_attributes()
                    .subscription_arn(arn)
                    .send()
                    .await
                    .map_err(|e| sdk("GetSubscriptionAttributes", arn, e))?;
                let raw = out.attributes().and_then(|a| a.get("RawMessageDelivery")).map_or("false", String::as_str);
                return mismatch(&format!("SNS subscription {arn}"), "RawMessageDelivery", raw, "true");
            }
        }
    }
    Err(Error::new(
        ErrorKind::NotFound,
        format!("aws verify: no SNS subscription of queue {queue_arn} to topic {}", topic.arn),
    ))
}
