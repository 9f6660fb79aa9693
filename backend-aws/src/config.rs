//! The `[aws]` config section (env `TIDINGS_AWS__*`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

pub use tidings_core::backend::cloud::Provisioning;

/// Settings of the AWS backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AwsConfig {
    /// Region; default from the AWS chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint for SNS and SQS (LocalStack, SNS/SQS-compatible providers); `AWS_ENDPOINT_URL` also works.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// `auto`, `verify` or `off`.
    #[serde(default)]
    pub provisioning: Provisioning,
    /// Long-poll wait of a receive, 1-20 s.
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub wait_time: Duration,
    /// How long a publish waits for others to share its `PublishBatch` call.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub publish_linger: Duration,
    /// Existing topics by logical name (used as is; required for `provisioning = "off"`).
    #[serde(default)]
    pub topic_arns: BTreeMap<String, String>,
    /// Existing subscription queues by `"<topic>.<subscription>"` (required for `provisioning = "off"`).
    #[serde(default)]
    pub queue_urls: BTreeMap<String, String>,
    /// Existing dead-letter queues by `"<topic>.<subscription>"` (required for `provisioning = "off"`).
    #[serde(default)]
    pub dlq_urls: BTreeMap<String, String>,
}

fn default_wait() -> Duration {
    Duration::from_secs(20)
}

fn default_linger() -> Duration {
    Duration::from_millis(5)
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            provisioning: Provisioning::Auto,
            wait_time: default_wait(),
            publish_linger: default_linger(),
            topic_arns: BTreeMap::new(),
            queue_urls: BTreeMap::new(),
            dlq_urls: BTreeMap::new(),
        }
    }
}
