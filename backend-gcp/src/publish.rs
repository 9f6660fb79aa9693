//! Publishing: one unary `Publish` call (over the REST API, [`crate::rest`]) per batch core hands over. Core coalesces
//! concurrent publishes over `gcp.publish_batch_delay`, sizes batches by `gcp.publish_batch_messages` and
//! `gcp.publish_batch_bytes`, keeps one call in flight on ordered topics, and retries; the driver sends each batch
//! once. Pub/Sub takes one ordering key per request, so an ordered topic's batch goes in one call per key (each key's
//! messages in batch order, the calls at once). Attribute rules are checked before sending; a message that breaks
//! them is refused on its own. With no client-side publish state (the client library pauses a key after a failed
//! ordered publish), a failed call leaves no key blocked: core's retry, or the next publish, just sends again.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use google_cloud_pubsub::model::Message as GMessage;
use tidings_core::backend::{OutgoingMessage, PublishReport, TopicDriver};
use tidings_core::{Error, Result};

use crate::meta::{google_trace_attributes, micros, Meta, META_ATTRIBUTE};
use crate::Shared;

/// Pub/Sub attribute limits.
const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 1024;

/// Publisher of one Pub/Sub topic.
#[derive(Debug)]
pub struct GcpTopic {
    shared: Arc<Shared>,
    /// `projects/<p>/topics/<name>`.
    path: Arc<str>,
    ordered: bool,
}

impl GcpTopic {
    pub(crate) fn new(shared: Arc<Shared>, path: String, ordered: bool) -> Self {
        Self { shared, path: path.into(), ordered }
    }
}

/// Checks Pub/Sub's attribute rules; the error names the attribute and the rule.
pub fn check_attributes(topic: &str, m: &OutgoingMessage) -> Result<()> {
    for (k, v) in &m.attributes {
        if k.starts_with("goog") {
            return Err(Error::invalid(format!(
                "attribute name {k:?} on topic {topic} is reserved by Pub/Sub: names must not start with \"goog\""
            )));
        }
        if k.len() > MAX_KEY_BYTES {
            return Err(Error::invalid(format!(
                "attribute name {k:?} on topic {topic} is {} bytes; Pub/Sub allows {MAX_KEY_BYTES}",
                k.len()
            )));
        }
        if v.len() > MAX_VALUE_BYTES {
            return Err(Error::invalid(format!(
                "attribute {k:?} on topic {topic} has a {}-byte value; Pub/Sub allows {MAX_VALUE_BYTES}",
                v.len()
            )));
        }
    }
    Ok(())
}

/// The Pub/Sub message for a tidings message, with metadata in the `tidings` attribute and, with `google_trace`, the
/// trace context also in the attributes Google's client libraries read.
pub fn to_message(m: &OutgoingMessage, meta: Meta, ordered: bool, google_trace: bool) -> GMessage {
    let mut attrs: Vec<(String, String)> = m.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if let (true, Some(t)) = (google_trace, meta.trace.as_ref()) {
        attrs.extend(google_trace_attributes(t));
    }
    attrs.push((META_ATTRIBUTE.to_string(), meta.encode()));
    let mut g = GMessage::new().set_data(m.payload.clone()).set_attributes(attrs);
    if let (true, Some(k)) = (ordered, m.ordering_key.as_deref()) {
        g = g.set_ordering_key(k);
    }
    g
}

pub fn meta_of(m: &OutgoingMessage) -> Meta {
    Meta { id: m.id.to_string(), ts: micros(m.publish_time), trace: m.trace.clone(), ..Default::default() }
}

#[async_trait]
impl TopicDriver for GcpTopic {
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport> {
        let mut report = PublishReport::accepted();
        let google_trace = self.shared.config.google_trace_attributes;
        // One call per ordering key (unordered topics: one call), with the batch indexes it carries.
        let mut calls: Vec<(Vec<usize>, Vec<GMessage>)> = Vec::new();
        let mut by_key: HashMap<Option<&str>, usize> = HashMap::new();
        for (i, m) in batch.iter().enumerate() {
            if let Err(e) = check_attributes(&self.path, m) {
                report.refuse(i, e);
                continue;
            }
            let key = m.ordering_key.as_deref().filter(|_| self.ordered);
            let call = *by_key.entry(key).or_insert_with(|| {
                calls.push((Vec::new(), Vec::new()));
                calls.len() - 1
            });
            calls[call].0.push(i);
            calls[call].1.push(to_message(m, meta_of(m), self.ordered, google_trace));
        }
        if calls.len() == 1 && calls[0].0.len() == batch.len() {
            // The whole batch in one call: its failure is the batch's.
            let (_, messages) = calls.pop().expect("one call");
            send(&self.shared, &self.path, messages).await?;
            return Ok(report);
        }
        let mut sent = tokio::task::JoinSet::new();
        for (indexes, messages) in calls {
            let (shared, path) = (self.shared.clone(), self.path.clone());
            sent.spawn(async move { (indexes, send(&shared, &path, messages).await) });
        }
        while let Some(done) = sent.join_next().await {
            let (indexes, outcome) =
                done.map_err(|e| Error::backend(format!("gcp: a publish to {} stopped: {e}", self.path), true))?;
            if let Err(e) = outcome {
                for i in indexes {
                    report.refuse(i, Error::new(e.kind(), e.to_string()).with_retryable(e.is_retryable()));
                }
            }
        }
        Ok(report)
    }
}

/// One `Publish` call of `messages` to `topic`, counted as `pubsub:Publish`; never retried here.
pub(crate) async fn send(shared: &Shared, topic: &str, messages: Vec<GMessage>) -> Result<()> {
    shared.calls.count_bytes("pubsub:Publish", messages.iter().map(|m| m.data.len()).sum());
    let provisioning = shared.config.provisioning;
    let ids =
        shared.rest()?.publish(topic, &messages).await.map_err(|e| crate::error::publish(topic, provisioning, e))?;
    if ids != messages.len() {
        // Accepted, but not as asked: another call could publish them twice.
        return Err(Error::backend(
            format!("gcp: publish to {topic} answered {ids} message ids for {} messages", messages.len()),
            false,
        ));
    }
    Ok(())
}
