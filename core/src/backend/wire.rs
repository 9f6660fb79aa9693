//! The wire format: what backends carry beside a payload, tidings' metadata in one message attribute named
//! `tidings` (so applications keep the rest of the broker's attribute budget). The body is the payload as published
//! (the serde_json encoding of the topic's type).

use serde::{Deserialize, Serialize};

/// Name of the attribute holding tidings' own metadata.
pub const META_ATTRIBUTE: &str = "tidings";

/// Name of the plain attribute holding a message's due time on backends that hold delayed messages client-side
/// ([`crate::Capabilities::delay`] false): RFC 3339 in UTC, such as `2025-06-01T09:00:00.000Z` (written with
/// milliseconds; any RFC 3339 time in UTC, and plain Unix milliseconds, are read). A foreign producer sets it by hand
/// to have tidings subscribers hold its message until then.
pub const DELIVER_AT_ATTRIBUTE: &str = "tidings-deliver-at";

/// The [`DELIVER_AT_ATTRIBUTE`] value of `at`, in whole milliseconds rounded up: the time it names is never before
/// `at`, so a delivery held until it is never early.
pub fn format_deliver_at(at: std::time::SystemTime) -> String {
    let nanos_in_ms = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() % 1_000_000);
    let up =
        if nanos_in_ms == 0 { at } else { at + std::time::Duration::from_nanos(u64::from(1_000_000 - nanos_in_ms)) };
    humantime::format_rfc3339_millis(up).to_string()
}

/// Reads a [`DELIVER_AT_ATTRIBUTE`] value; `None` when it is neither RFC 3339 in UTC nor Unix milliseconds.
pub fn parse_deliver_at(value: &str) -> Option<std::time::SystemTime> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = v.parse().ok()?;
        return std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms));
    }
    humantime::parse_rfc3339_weak(v.strip_suffix('Z').or_else(|| v.strip_suffix("+00:00")).unwrap_or(v)).ok()
}

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

    #[test]
    fn due_times_format_as_rfc3339_and_parse_back() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_748_768_400_250);
        assert_eq!(format_deliver_at(at), "2025-06-01T09:00:00.250Z");
        assert_eq!(parse_deliver_at(&format_deliver_at(at)), Some(at));
        assert_eq!(parse_deliver_at("2025-06-01T09:00:00Z"), Some(at - std::time::Duration::from_millis(250)));
        assert_eq!(parse_deliver_at("2025-06-01T09:00:00+00:00"), parse_deliver_at("2025-06-01T09:00:00Z"));
        assert_eq!(parse_deliver_at("1748768400250"), Some(at));
        assert_eq!(parse_deliver_at("soon"), None);
        assert_eq!(parse_deliver_at(""), None);
    }

    #[test]
    fn due_times_round_up_to_the_millisecond_so_none_is_early() {
        use std::time::Duration;
        let ms = std::time::UNIX_EPOCH + Duration::from_millis(1_748_768_400_250);
        for extra in [Duration::from_nanos(1), Duration::from_micros(500), Duration::from_nanos(999_999)] {
            let at = ms + extra;
            assert_eq!(format_deliver_at(at), "2025-06-01T09:00:00.251Z", "{extra:?} past the millisecond");
            let read = parse_deliver_at(&format_deliver_at(at)).unwrap();
            let ahead = read.duration_since(at).unwrap_or_else(|_| panic!("{read:?} is before {at:?}"));
            assert!(ahead < Duration::from_millis(1), "{read:?} against {at:?}");
        }
    }
}
