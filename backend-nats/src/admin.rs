//! The operator SPI on JetStream: topics are the streams under the prefix (a dead-letter stream, whose only subject
//! is `<name>.dead`, is left out), subscriptions their durable consumers; figures from `CONSUMER.INFO` (backlog =
//! pending + ack pending, in flight = ack pending, the oldest unacked message found after the ack floor) and the
//! dead-letter stream's message count. A subscription's dead letters are its dead-letter stream as the one
//! dead-letter surface ([`crate::dlq`]), which core's operator sweeps to read, redrive and purge them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_trait::async_trait;
use futures_util::TryStreamExt;
use serde_json::json;
use tidings_core::admin::{Admin, Check, SubscriptionResource, SubscriptionStats, TopicResource, Unknown};
use tidings_core::backend::{DeadLetters, SubscriptionSpec};
use tidings_core::{Error, ErrorKind, Result};

use crate::dlq::{js_err, NatsDeadLetters};
use crate::names::SubNames;
use crate::provision::{call, stream_info};
use crate::Shared;

/// Operator access to a JetStream account.
#[derive(Debug)]
pub(crate) struct NatsAdmin {
    pub(crate) s: Arc<Shared>,
}

/// Whether a stream is a dead-letter stream (its one subject is `<name>.dead`).
fn is_dead_letter_stream(info: &async_nats::jetstream::stream::Info) -> bool {
    info.config.subjects == [format!("{}.dead", info.config.name)]
}

/// An account limit as text (`unlimited` when unset or negative).
fn limit(v: Option<i64>) -> String {
    v.filter(|v| *v >= 0).map_or_else(|| "unlimited".into(), |v| v.to_string())
}

impl NatsAdmin {
    async fn consumer(&self, names: &SubNames) -> Result<consumer::Info> {
        let (t, name) = (&names.topic.stream, &names.consumer);
        let info: Option<consumer::Info> =
            call(&self.s, "CONSUMER.INFO", format!("CONSUMER.INFO.{t}.{name}"), name, &json!({})).await?;
        info.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("nats: consumer {name:?} of stream {t:?} does not exist"))
        })
    }

    /// How long ago the first message after the consumer's ack floor was stored (it is unacked: the floor would
    /// have passed it otherwise).
    async fn oldest_unacked(&self, names: &SubNames, floor: u64) -> Result<Option<Duration>> {
        let t = &names.topic.stream;
        let stream = self.s.js.get_stream_no_info(t).await.map_err(|e| js_err("open", t, e))?;
        self.s.calls.count("STREAM.MSG.GET");
        match stream.get_first_raw_message_by_subject(names.topic.filter(), floor + 1).await {
            Ok(m) => {
                let stored: SystemTime = m.time.into();
                Ok(Some(SystemTime::now().duration_since(stored).unwrap_or_default()))
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(js_err("STREAM.MSG.GET", t, e)),
        }
    }

    /// The dead-letter stream of an existing subscription.
    async fn queue(&self, spec: &SubscriptionSpec) -> Result<NatsDeadLetters> {
        let names = SubNames::of(spec)?;
        self.consumer(&names).await?;
        Ok(NatsDeadLetters::new(self.s.clone(), names))
    }
}

#[async_trait]
impl Admin for NatsAdmin {
    async fn list(&self, prefix: &str) -> Result<Vec<TopicResource>> {
        let mut streams = self.s.js.streams();
        let mut topics = Vec::new();
        loop {
            self.s.calls.count("STREAM.LIST");
            let Some(info) = streams.try_next().await.map_err(|e| js_err("STREAM.LIST", prefix, e))? else { break };
            if info.config.name.starts_with(prefix) && !is_dead_letter_stream(&info) {
                topics.push(info.config.name);
            }
        }
        topics.sort();
        let mut out = Vec::with_capacity(topics.len());
        for t in topics {
            let stream = self.s.js.get_stream_no_info(&t).await.map_err(|e| js_err("open", &t, e))?;
            let mut consumers = stream.consumer_names();
            let mut subscriptions = Vec::new();
            loop {
                self.s.calls.count("CONSUMER.NAMES");
                let Some(name) = consumers.try_next().await.map_err(|e| js_err("CONSUMER.NAMES", &t, e))? else {
                    break;
                };
                let dlq = format!("{name}-dlq");
                subscriptions.push(SubscriptionResource { resource: name, dead_letter_resource: Some(dlq) });
            }
            subscriptions.sort_by(|a, b| a.resource.cmp(&b.resource));
            out.push(TopicResource { resource: t, config: None, subscriptions });
        }
        Ok(out)
    }

    async fn stats(&self, spec: &SubscriptionSpec) -> Result<SubscriptionStats> {
        let names = SubNames::of(spec)?;
        let c = self.consumer(&names).await?;
        let in_flight = c.num_ack_pending as u64;
        let backlog = c.num_pending + in_flight;
        let oldest_unacked = if backlog == 0 {
            Some(Duration::ZERO)
        } else {
            self.oldest_unacked(&names, c.ack_floor.stream_sequence).await?
        };
        let dead_letters = stream_info(&self.s, &names.dlq_stream).await?.map(|i| i.state.messages);
        Ok(SubscriptionStats {
            backlog: Some(backlog),
            // Held by the subscribing processes: JetStream counts a held delayed message as ack pending.
            scheduled: None,
            in_flight: Some(in_flight),
            oldest_unacked,
            dead_letters,
        })
    }

    async fn dead_letter_queue(&self, spec: &SubscriptionSpec) -> Result<Option<Arc<dyn DeadLetters>>> {
        Ok(Some(Arc::new(self.queue(spec).await?)))
    }

    async fn delete_subscription(&self, spec: &SubscriptionSpec) -> Result<()> {
        let names = SubNames::of(spec)?;
        let (t, name, dlq) = (&names.topic.stream, &names.consumer, &names.dlq_stream);
        let _: Option<serde_json::Value> =
            call(&self.s, "CONSUMER.DELETE", format!("CONSUMER.DELETE.{t}.{name}"), name, &json!({})).await?;
        let _: Option<serde_json::Value> =
            call(&self.s, "STREAM.DELETE", format!("STREAM.DELETE.{dlq}"), dlq, &json!({})).await?;
        Ok(())
    }

    async fn provisioned(&self, spec: &SubscriptionSpec) -> Result<()> {
        crate::provision::subscription(&self.s, spec).await.map(drop)
    }

    async fn permissions(&self, topology: &tidings_core::topology::Topology) -> Vec<Check> {
        // Read as JSON: async-nats' Account type does not match every server's answer.
        let info: Result<Option<serde_json::Value>> = call(&self.s, "INFO", "INFO".into(), "account", &json!({})).await;
        let account = match info {
            Ok(Some(a)) => Check::pass(
                "permissions: JetStream",
                format!(
                    "JetStream is enabled for this account ({} streams, {} consumers; limits: {} streams, {} consumers)",
                    a["streams"],
                    a["consumers"],
                    limit(a["limits"]["max_streams"].as_i64()),
                    limit(a["limits"]["max_consumers"].as_i64())
                ),
            ),
            Ok(None) => Check::fail("permissions: JetStream", "JetStream is not enabled for this account"),
            Err(e) => Check::fail("permissions: JetStream", format!("JetStream account info failed: {e}")),
        };
        let subjects: Vec<String> = topology.topics.iter().map(|t| format!("{}.>", t.resource)).collect();
        vec![
            account,
            Check::skipped(
                "permissions: subjects",
                format!(
                    "NATS grants publish and subscribe per subject in the server's account configuration, which a client \
                     cannot read; the application needs publish on {} and $JS.API.>, and subscribe on _INBOX.>",
                    if subjects.is_empty() { "its streams' subjects".to_string() } else { subjects.join(", ") }
                ),
            ),
        ]
    }

    fn unknown(&self) -> Vec<Unknown> {
        vec![
            ("delivery", "a JetStream stream does not record the topic's delivery guarantee or ordering"),
            ("rates", "JetStream reports no message rates (only counts and sequences)"),
            (
                "scheduled",
                "delayed messages are held by the subscribing processes (a Nak with the time left), so JetStream counts \
                 them as ack pending, in flight with the delivered ones",
            ),
        ]
    }
}
