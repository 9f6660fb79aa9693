//! The wire format: what backends carry beside a payload, tidings' metadata in one message attribute named
//! `tidings` (so applications keep the rest of the broker's attribute budget). The body is the payload as published
//! (the serde_json encoding of the topic's type).

use serde::{Deserialize, Serialize};

/// Name of the attribute holding tidings' own metadata.
pub const META_ATTRIBUTE: &str = "tidings";

/// tidings' metadata on the wire, JSON in the `tidings` attribute. Messages from foreign producers have none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireMeta {
    /// The tidings message id, which survives redelivery, redrive and relay (exactly-once topics de-duplicate by it).
    pub id: String,
    /// Publish time, microseconds since the Unix epoch.
    pub ts: i64,
    /// Ordering key, where the broker does not return it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Redrive copies: the one subscription that takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Dead-letter reason (DLQ copies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Deliveries before dead-lettering (DLQ copies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Dead-lettered at, microseconds since the Unix epoch (DLQ copies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_ts: Option<i64>,
    /// Trace context of the publish: the propagator's fields (W3C `traceparent`, `tracestate`), for consumers that
    /// continue the trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceContext>,
}

impl WireMeta {
    /// The value of the [`META_ATTRIBUTE`] attribute: this metadata as compact JSON, such as
    /// `{"id":"01...","ts":1717000000000000}` (absent fields left out).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("metadata serializes")
    }

    /// Parses an attribute value; `None` for anything else (a foreign producer's attribute of the same name).
    pub fn decode(s: &str) -> Option<WireMeta> {
        serde_json::from_str(s).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_skips_empty_fields() {
        let m = WireMeta { id: "a".into(), ts: 5, ..Default::default() };
        assert_eq!(m.encode(), r#"{"id":"a","ts":5}"#);
        assert_eq!(WireMeta::decode(&m.encode()), Some(m));
        assert_eq!(WireMeta::decode("not json"), None);
        let trace = crate::trace::TraceContext::new([("traceparent".to_string(), "00-1-2-01".to_string())].into());
        let m = WireMeta { id: "a".into(), ts: 5, trace, ..Default::default() };
        assert_eq!(m.encode(), r#"{"id":"a","ts":5,"trace":{"traceparent":"00-1-2-01"}}"#);
        assert_eq!(WireMeta::decode(&m.encode()), Some(m));
    }
}
