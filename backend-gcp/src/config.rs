//! The `[gcp]` config section (env `TIDINGS_GCP__*`).

use std::time::Duration;

use serde::Deserialize;
use tidings_core::{Error, Result};

pub use tidings_core::backend::cloud::Provisioning;

/// Settings of the GCP backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GcpConfig {
    /// Project id; default from `GOOGLE_CLOUD_PROJECT`, `GCLOUD_PROJECT` or (emulator) `PUBSUB_PROJECT_ID`.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Endpoint; default `http://$PUBSUB_EMULATOR_HOST` when that is set (with anonymous credentials), else Google's.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `auto`, `verify` or `off`.
    #[serde(default)]
    pub provisioning: Provisioning,
    /// Most messages per `Publish` call core's batcher makes (1 to 1,000, Pub/Sub's limit).
    #[serde(default = "default_count")]
    pub publish_batch_messages: u32,
    /// Most bytes per `Publish` call core's batcher makes (1 to 10,000,000, Pub/Sub's limit).
    #[serde(default = "default_bytes")]
    pub publish_batch_bytes: u32,
    /// How long a publish waits for concurrent ones to share its `Publish` call (core's `publish_linger`; zero: none).
    #[serde(default = "default_delay", with = "humantime_serde")]
    pub publish_batch_delay: Duration,
    /// Also write the publish's trace context as the attributes Google's client libraries read
    /// (`googclient_traceparent`, `googclient_tracestate`), so their subscribers continue the trace; costs those
    /// attributes of Pub/Sub's 100 per message. Received messages are read either way.
    #[serde(default)]
    pub google_trace_attributes: bool,
}

/// Messages per `Publish` request Pub/Sub accepts.
pub(crate) const MAX_PUBLISH_MESSAGES: u32 = 1000;
/// Bytes per `Publish` request Pub/Sub accepts.
pub(crate) const MAX_PUBLISH_BYTES: u32 = 10_000_000;

impl GcpConfig {
    /// Refuses batch sizes Pub/Sub cannot take, naming the key, the value and the limit.
    pub(crate) fn check(&self) -> Result<()> {
        for (key, value, max) in [
            ("gcp.publish_batch_messages", self.publish_batch_messages, MAX_PUBLISH_MESSAGES),
            ("gcp.publish_batch_bytes", self.publish_batch_bytes, MAX_PUBLISH_BYTES),
        ] {
            if value == 0 || value > max {
                return Err(Error::config(format!(
                    "`{key}` is {value}; it must be 1 to {max}, Pub/Sub's limit per Publish request"
                )));
            }
        }
        Ok(())
    }
}

fn default_count() -> u32 {
    100
}
fn default_bytes() -> u32 {
    1_000_000
}
fn default_delay() -> Duration {
    Duration::from_millis(10)
}

impl Default for GcpConfig {
    fn default() -> Self {
        Self {
            project_id: None,
            endpoint: None,
            provisioning: Provisioning::Auto,
            publish_batch_messages: default_count(),
            publish_batch_bytes: default_bytes(),
            publish_batch_delay: default_delay(),
            google_trace_attributes: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_outside_pub_sub_limits_are_refused_naming_key_value_and_limit() {
        GcpConfig::default().check().expect("the defaults are valid");
        let c = GcpConfig {
            publish_batch_messages: 1000,
            publish_batch_bytes: 10_000_000,
            publish_batch_delay: Duration::ZERO,
            ..GcpConfig::default()
        };
        c.check().expect("the limits themselves and no linger are valid");
        for (messages, bytes, named) in [
            (0, 1, ["gcp.publish_batch_messages", "is 0", "1 to 1000"]),
            (1001, 1, ["gcp.publish_batch_messages", "is 1001", "1 to 1000"]),
            (1, 0, ["gcp.publish_batch_bytes", "is 0", "1 to 10000000"]),
            (1, 10_000_001, ["gcp.publish_batch_bytes", "is 10000001", "1 to 10000000"]),
        ] {
            let c = GcpConfig { publish_batch_messages: messages, publish_batch_bytes: bytes, ..GcpConfig::default() };
            let e = c.check().unwrap_err();
            assert_eq!(e.kind(), tidings_core::ErrorKind::Config);
            for n in named {
                assert!(e.to_string().contains(n), "{n:?} missing from: {e}");
            }
        }
    }
}
