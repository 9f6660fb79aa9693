//! tidings metadata carried in one SQS/SNS message attribute (`tidings`), so users keep 9 of the 10 attributes that
//! raw delivery allows.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tidings_core::Attributes;

/// Name of the attribute holding tidings' own metadata.
pub const META_ATTRIBUTE: &str = "tidings";

/// AWS allows 10 message attributes per message with raw delivery; one is tidings'.
pub const MAX_USER_ATTRIBUTES: usize = 9;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// tidings message id.
    pub id: String,
    /// Publish time, microseconds since the Unix epoch.
    pub ts: i64,
    /// Ordering key (ordered topics only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Dead-letter reason (DLQ copies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Deliveries before dead-lettering (DLQ copies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Dead-lettered at, microseconds since the Unix epoch (DLQ copies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_ts: Option<i64>,
}

impl Meta {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("metadata serializes")
    }

    pub fn decode(s: &str) -> Option<Meta> {
        serde_json::from_str(s).ok()
    }
}

pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

pub fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

/// Splits received SQS message attributes into tidings metadata and user attributes (string-valued ones; binary
/// attributes of foreign producers are dropped).
pub fn split(attrs: Option<&HashMap<String, aws_sdk_sqs::types::MessageAttributeValue>>) -> (Option<Meta>, Attributes) {
    let mut meta = None;
    let mut user = Attributes::new();
    for (k, v) in attrs.into_iter().flatten() {
        let Some(s) = v.string_value() else { continue };
        if k == META_ATTRIBUTE {
            meta = Meta::decode(s);
        } else {
            user.insert(k.clone(), s.to_string());
        }
    }
    (meta, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_skips_empty_fields() {
        let m = Meta { id: "a".into(), ts: 5, ..Default::default() };
        assert_eq!(m.encode(), r#"{"id":"a","ts":5}"#);
        assert_eq!(Meta::decode(&m.encode()), Some(m));
        assert_eq!(Meta::decode("not json"), None);
    }
}
