//! Publishing through the crate's batching publisher (thresholds from config). Attribute rules and the size limit are
//! checked for the whole batch before anything is sent; after a failed ordered publish the key is resumed.

use async_trait::async_trait;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message as GMessage;
use tidings_core::backend::{OutgoingMessage, PublishReport, TopicDriver};
use tidings_core::{Error, Result};

use crate::meta::{google_trace_attributes, micros, Meta, META_ATTRIBUTE};

/// Pub/Sub attribute limits.
const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 1024;

/// Publisher of one Pub/Sub topic.
#[derive(Debug)]
pub struct GcpTopic {
    pub(crate) publisher: Publisher,
    pub(crate) path: String,
    pub(crate) ordered: bool,
    pub(crate) provisioning: tidings_core::cloud::Provisioning,
    pub(crate) calls: std::sync::Arc<tidings_core::calls::ApiCalls>,
    /// `gcp.google_trace_attributes`.
    pub(crate) google_trace: bool,
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
        self.calls.count_bytes("pubsub:Publish", batch.iter().map(|m| m.payload.len()).sum());
        let mut pending = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match check_attributes(&self.path, m) {
                Ok(()) => pending.push((
                    i,
                    m.ordering_key.clone(),
                    self.publisher.publish(to_message(m, meta_of(m), self.ordered, self.google_trace)),
                )),
                Err(e) => report.refuse(i, e),
            }
        }
        for (i, key, fut) in pending {
            if let Err(e) = fut.await {
                if let (true, Some(k)) = (self.ordered, key) {
                    // The publisher pauses a key after a failure; resume it so later publishes can go through.
                    self.publisher.resume_publish(k.to_string());
                }
                report.refuse(i, crate::error::publish(&self.path, self.provisioning, &e));
            }
        }
        Ok(report)
    }
}
