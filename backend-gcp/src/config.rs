//! The `[gcp]` config section (env `TIDINGS_GCP__*`).

use std::time::Duration;

use serde::Deserialize;

pub use tidings_core::cloud::Provisioning;

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
    /// Publisher batching: messages per batch.
    #[serde(default = "default_count")]
    pub publish_batch_messages: u32,
    /// Publisher batching: bytes per batch.
    #[serde(default = "default_bytes")]
    pub publish_batch_bytes: u32,
    /// Publisher batching: how long a message waits for its batch to fill.
    #[serde(default = "default_delay", with = "humantime_serde")]
    pub publish_batch_delay: Duration,
    /// Also write the publish's trace context as the attributes Google's client libraries read
    /// (`googclient_traceparent`, `googclient_tracestate`), so their subscribers continue the trace; costs those
    /// attributes of Pub/Sub's 100 per message. Received messages are read either way.
    #[serde(default)]
    pub google_trace_attributes: bool,
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
