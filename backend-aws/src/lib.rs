//! AWS backend of tidings: a topic is an SNS topic, each subscription an SQS queue subscribed to it with raw
//! delivery, plus a dead-letter queue; FIFO for ordered and exactly-once topics. Region and credentials come from the
//! standard AWS chain, the endpoint from `AWS_ENDPOINT_URL` or `aws.endpoint_url` (LocalStack, SNS/SQS-compatible
//! providers).
//!
//! Configuration keys, the exact resource names, limits, IAM permissions per provisioning mode, cost, running it on
//! LocalStack, and what other producers and consumers see: the book's
//! [AWS page](https://example.invalid/tidings/book/backends/aws.html), the one place those tables live.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use tidings_aws::{AwsBackend, AwsConfig, Provisioning};
//!
//! # async fn demo() -> tidings_core::Result<()> {
//! let mut config = AwsConfig::default(); // or AwsBackend::from_settings(&settings): the [aws] section
//! config.region = Some("eu-west-1".into());
//! config.provisioning = Provisioning::Verify;
//! let bus = tidings_core::Bus::new(Arc::new(AwsBackend::new(config).await?));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admin;
pub mod config;
mod dlq;
mod error;
#[cfg(feature = "iam-check")]
mod iam;
mod meta;
mod names;
mod provision;
mod publish;
mod subscribe;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use tidings_core::backend::{
    BackendInfo, Billed, Priced, SubscriptionDriver, SubscriptionSpec, TopicDriver, TopicSpec,
};
use tidings_core::{Backend, Capabilities, Result, Settings};

pub use config::{AwsConfig, Provisioning};
use meta::MAX_USER_ATTRIBUTES;
pub use meta::META_ATTRIBUTE;
pub use tidings_core::backend::calls::ApiCalls;

/// SNS accepts 262,144 bytes per message including attributes; tidings keeps this much for its own attribute.
pub(crate) const METADATA_RESERVE: usize = 512;

/// Clients, config and call counters shared by every driver of one backend.
pub(crate) struct Shared {
    /// SNS and SQS clients with the SDK's own retries off: one HTTP call per driver call (see `with_sdk_config`).
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub config: AwsConfig,
    pub calls: Arc<ApiCalls>,
    /// For STS and IAM clients (`tidings doctor`): they keep the SDK's own retries, as no portable layer retries
    /// those one-off checks.
    #[cfg(feature = "iam-check")]
    pub sdk: aws_config::SdkConfig,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The AWS SNS + SQS backend.
#[derive(Debug, Clone)]
pub struct AwsBackend {
    shared: Arc<Shared>,
}

impl AwsBackend {
    /// Reads the `[aws]` section and the standard AWS chain (region, credentials, `AWS_ENDPOINT_URL`).
    pub async fn from_settings(settings: &Settings) -> Result<Self> {
        Self::new(settings.section::<AwsConfig>("aws")?).await
    }

    /// A backend with this configuration; the rest (credentials, region) from the standard AWS chain.
    pub async fn new(config: AwsConfig) -> Result<Self> {
        if let Some(e) = &config.endpoint_url {
            tidings_core::backend::cloud::require_tls("aws.endpoint_url", e)?;
        }
        for var in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SNS", "AWS_ENDPOINT_URL_SQS"] {
            if let Ok(e) = std::env::var(var) {
                tidings_core::backend::cloud::require_tls(var, &e)?;
            }
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = &config.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &config.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        Self::with_sdk_config(&loader.load().await, config)
    }

    /// A backend on an SDK configuration the application built itself (its own credentials provider, say).
    pub fn with_sdk_config(sdk: &aws_config::SdkConfig, config: AwsConfig) -> Result<Self> {
        if !(1..=20).contains(&config.wait_time.as_secs()) {
            return Err(tidings_core::Error::config(format!(
                "aws.wait_time {:?} is invalid: SQS long polls last 1-20 s",
                config.wait_time
            )));
        }
        if sdk.region().is_none() {
            return Err(tidings_core::Error::config(
                "missing config key `aws.region` (set TIDINGS_AWS__REGION, AWS_REGION, or a profile region)",
            ));
        }
        // Long polls: each attempt may take the wait time, so the attempt timeout allows that plus slack.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(config.wait_time + Duration::from_secs(10))
            .build();
        let sdk = sdk.to_builder().timeout_config(timeouts).build();
        // Every SNS and SQS call goes through clients with the SDK's own retries off: the portable layer in core owns
        // the retries (publishes, receives, settlements, provisioning, operator reads), so each attempt is one HTTP
        // call; with the SDK's 3 attempts under each of core's, a failing publish or ack made 12 calls instead of 4
        // (tests/retries.rs counts them).
        let messaging = sdk.to_builder().retry_config(RetryConfig::disabled()).build();
        let shared = Shared {
            sns: aws_sdk_sns::Client::new(&messaging),
            sqs: aws_sdk_sqs::Client::new(&messaging),
            config,
            calls: Arc::new(ApiCalls::new("aws")),
            #[cfg(feature = "iam-check")]
            sdk: sdk.clone(),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// AWS API calls made so far, by operation: the bill.
    pub fn api_calls(&self) -> &ApiCalls {
        &self.shared.calls
    }
}

/// The AWS backend's names and pricing: SNS and SQS bill requests, a request per started 64 KiB.
pub fn info() -> BackendInfo {
    const PRICING: &[Priced] = &[
        Priced::new("sns:", "SNS", Billed::Requests { chunk_bytes: 65_536 }),
        Priced::new("sqs:", "SQS", Billed::Requests { chunk_bytes: 65_536 }),
    ];
    BackendInfo::new("aws").with_messaging_system("aws.sns", "aws_sqs").with_provisioning(false).with_pricing(PRICING)
}

#[async_trait]
impl Backend for AwsBackend {
    fn name(&self) -> &str {
        "aws"
    }

    fn info(&self) -> BackendInfo {
        info()
    }

    fn api_calls(&self) -> Option<&ApiCalls> {
        Some(&self.shared.calls)
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.ordering = true;
        c.exactly_once = true;
        c.nack_delay = true;
        c.max_message_size = 262_144 - METADATA_RESERVE;
        c.max_publish_batch = publish::MAX_ENTRIES;
        c.max_publish_bytes = publish::MAX_BATCH_BYTES;
        c.publish_overhead = METADATA_RESERVE;
        c.publish_linger = self.shared.config.publish_linger;
        // At AWS's tens of milliseconds a call, 4 in flight would cap a topic near a thousand messages a second per
        // process; Go CDK allows 100. Ordered topics send one call at a time, to keep order.
        c.publish_in_flight = 64;
        c.max_receive_batch = 10;
        c.max_settle_batch = subscribe::MAX_BATCH;
        // One ReceiveMessage returns at most 10: with one call in flight, a subscription would take at most 10
        // messages per round trip.
        c.concurrent_receives = 4;
        // A batch of n takes n/10 ReceiveMessage calls to gather and n/10 ChangeMessageVisibilityBatch calls per lease
        // extension: at 1,000, 100 of each.
        c.max_batch_messages = 1000;
        c.max_attributes = MAX_USER_ATTRIBUTES;
        c.backlog = true;
        // Delayed delivery is held by core: SNS has no delay, and SQS's DelaySeconds is per message only on a
        // SendMessage to a standard queue (tidings publishes through SNS). A held message is made invisible for the
        // time left but the lead below (12 h at most per change), held in process for the rest, and requeued into its
        // queue when due.
        c.max_nack_delay = Duration::from_secs(12 * 3600);
        // Asked back 3 s before due (the rest held in process), so the whole seconds of visibility and the second an
        // expired visibility may take to end (LocalStack makes messages visible again once a second) never make it
        // late.
        c.nack_hold_lead = Duration::from_secs(3);
        c.max_delay = Duration::from_secs(14 * 24 * 3600);
        c
    }

    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>> {
        let res = provision::topic(&self.shared, spec).await?;
        Ok(Arc::new(publish::AwsTopic::new(self.shared.clone(), res, spec.config.ordered)))
    }

    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>> {
        let topic = provision::topic(&self.shared, &spec.topic).await?;
        let res = provision::subscription(&self.shared, spec, &topic).await?;
        Ok(Arc::new(subscribe::AwsSubscription::new(self.shared.clone(), res, spec.topic.config.ordered)))
    }

    fn admin(&self) -> Option<Arc<dyn tidings_core::admin::Admin>> {
        Some(Arc::new(admin::AwsAdmin { s: self.shared.clone() }))
    }
}
