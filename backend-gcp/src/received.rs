//! What a received Pub/Sub message says: tidings' metadata, the message id, publish time, the application's
//! attributes, and a dead-letter subscription's message as a [`DeadLetter`]. Read by the subscription
//! ([`crate::subscribe`]) and the dead-letter path ([`crate::dlq`]).

use google_cloud_pubsub::model::Message as GMessage;
use tidings_core::{Attributes, DeadLetter, MessageId};

use crate::meta::{from_micros, is_google_trace_attribute, Meta, META_ATTRIBUTE};

/// Attributes the service adds to a message its own dead-letter policy moved.
const NATIVE_DLQ_PREFIX: &str = "CloudPubSubDeadLetterSource";

pub(crate) fn meta_of(m: &GMessage) -> Option<Meta> {
    m.attributes.get(META_ATTRIBUTE).and_then(|v| Meta::decode(v))
}

pub(crate) fn id_of(m: &GMessage, meta: Option<&Meta>) -> String {
    meta.map_or_else(|| m.message_id.clone(), |x| x.id.clone())
}

pub(crate) fn user_attributes(m: &GMessage) -> Attributes {
    m.attributes
        .iter()
        // An attribute named `tidings` that is not tidings metadata (a foreign producer's) is kept as it is; the trace
        // attributes of Google's client libraries are the message's trace context, not the application's.
        .filter(|(k, v)| {
            !(k.starts_with(NATIVE_DLQ_PREFIX)
                || is_google_trace_attribute(k)
                || k.as_str() == META_ATTRIBUTE && Meta::decode(v).is_some())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub(crate) fn publish_time(m: &GMessage, meta: Option<&Meta>) -> std::time::SystemTime {
    match meta {
        Some(x) => from_micros(x.ts),
        None => m.publish_time.as_ref().map_or(std::time::SystemTime::now(), |t| {
            from_micros(t.seconds() * 1_000_000 + i64::from(t.nanos()) / 1000)
        }),
    }
}

/// A message of a dead-letter subscription as a [`DeadLetter`] (also read by the operator SPI).
pub(crate) fn dead_letter_of(m: &GMessage) -> DeadLetter {
    let meta = meta_of(m);
    let native = m.attributes.get("CloudPubSubDeadLetterSourceDeliveryCount").and_then(|c| c.parse().ok());
    let attempts = meta.as_ref().and_then(|x| x.attempts).or(native).unwrap_or(0);
    let reason = meta
        .as_ref()
        .and_then(|x| x.reason.clone())
        .unwrap_or_else(|| format!("moved by the Pub/Sub dead-letter policy after {attempts} deliveries"));
    let id = MessageId::from(id_of(m, meta.as_ref()));
    let at = meta.as_ref().and_then(|x| x.dlq_ts).map_or(std::time::SystemTime::now(), from_micros);
    DeadLetter::new(id, m.data.clone(), publish_time(m, meta.as_ref()), attempts, reason, at)
        .with_attributes(user_attributes(m))
        .with_ordering_key((!m.ordering_key.is_empty()).then(|| m.ordering_key.clone()))
}
