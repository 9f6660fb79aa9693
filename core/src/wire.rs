//! What cloud backends carry beside a payload: tidings' metadata in one message attribute named `tidings` (so
//! applications keep the rest of the broker's attribute budget), and the provisioning modes they share.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Name of the attribute holding tidings' own metadata.
pub const META_ATTRIBUTE: &str = "tidings";

/// tidings' metadata on the wire, JSON in the `tidings` attribute. Messages from foreign producers have none.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireMeta {
    /// tidings message id.
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
}

impl WireMeta {
    /// The attribute value.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("metadata serializes")
    }

    /// Parses an attribute value; `None` for anything else (a foreign producer's attribute of the same name).
    pub fn decode(s: &str) -> Option<WireMeta> {
        serde_json::from_str(s).ok()
    }
}

/// Microseconds since the Unix epoch.
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// The time `us` microseconds after the Unix epoch.
pub fn from_micros(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

/// What a cloud backend may do to cloud resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provisioning {
    /// Create what is missing, idempotently (the dev default).
    #[default]
    Auto,
    /// Check that resources exist with the declared settings; a difference is an error naming it.
    Verify,
    /// Trust configuration: no admin calls.
    Off,
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
    }
}

/// Checks that `endpoint` uses TLS unless it is on this machine (the emulators): credentials and messages must not
/// cross a network in clear. `key` names the setting in the error.
pub fn require_tls(key: &str, endpoint: &str) -> crate::Result<()> {
    let Some(rest) = endpoint.strip_prefix("http://") else { return Ok(()) };
    let host_port = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    Err(crate::Error::config(format!(
        "{key} {endpoint:?} is plain http to a non-loopback host; use https (plain http is allowed only for \
         127.0.0.0/8, ::1 and localhost, where the emulators run)"
    )))
}

#[cfg(test)]
mod tls_tests {
    use super::require_tls;

    #[test]
    fn plain_http_is_only_for_loopback() {
        for ok in [
            "https://sqs.eu-west-1.amazonaws.com",
            "http://127.0.0.1:4566",
            "http://localhost:8085",
            "http://[::1]:1",
            "http://127.9.9.9",
        ] {
            require_tls("aws.endpoint_url", ok).unwrap();
        }
        for bad in
            ["http://10.0.0.5:4566", "http://example.com", "http://pubsub.googleapis.com/v1", "http://[2001:db8::1]:80"]
        {
            let e = require_tls("gcp.endpoint", bad).unwrap_err().to_string();
            assert!(e.contains("gcp.endpoint") && e.contains(bad) && e.contains("https"), "{e}");
        }
    }
}
