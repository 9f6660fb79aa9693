//! tidings metadata carried in one Pub/Sub attribute (`tidings`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Name of the attribute holding tidings' own metadata.
pub const META_ATTRIBUTE: &str = "tidings";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// tidings message id.
    pub id: String,
    /// Publish time, microseconds since the Unix epoch.
    pub ts: i64,
    /// Redrive copies: the one subscription that takes them (the others of the topic ack and skip them).
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
