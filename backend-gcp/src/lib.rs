//! Google Cloud Pub/Sub backend of tidings, on Google's official `google-cloud-pubsub` crate: a topic is a Pub/Sub
//! topic, each subscription a Pub/Sub subscription with a dead-letter policy and a dead-letter topic of its own.
//! Connection: Application Default Credentials, or with `PUBSUB_EMULATOR_HOST` set the emulator at
//! `http://$PUBSUB_EMULATOR_HOST` with anonymous credentials (the crate itself does not read that variable).
//!
//! Configuration keys, the exact resource names, limits, IAM roles per provisioning mode, cost, running it on the
//! emulator, and what other producers and consumers see: the book's
//! [Google Cloud Pub/Sub page](https://example.invalid/tidings/book/backends/gcp.html), the one place those tables
//! live.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use tidings_gcp::{GcpBackend, GcpConfig};
//!
//! # async fn demo() -> tidings_core::Result<()> {
//! let mut config = GcpConfig::default(); // or GcpBackend::from_settings(&settings): the [gcp] section
//! config.project_id = Some("my-project".into()); // default: GOOGLE_CLOUD_PROJECT
//! let bus = tidings_core::Bus::new(Arc::new(GcpBackend::new(config).await?));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admin;
pub mod config;
mod dlq;
mod error;
mod iam;
mod meta;
mod provision;
mod publish;
mod received;
mod rest;
mod subscribe;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use google_cloud_pubsub::client::{BasePublisher, Publisher, SchemaService, Subscriber, SubscriptionAdmin, TopicAdmin};
use tidings_core::backend::{
    BackendInfo, Billed, Priced, SubscriptionDriver, SubscriptionSpec, TopicDriver, TopicSpec,
};
use tidings_core::{Backend, Capabilities, Error, Result, Settings};

pub use config::{GcpConfig, Provisioning};
pub use meta::META_ATTRIBUTE;

/// Pub/Sub's message limit is 10 MB; tidings keeps this much of it for its own attribute.
pub(crate) const METADATA_RESERVE: usize = 1024;

/// Clients and settings shared by every driver of one backend.
pub(crate) struct Shared {
    pub project: String,
    pub config: GcpConfig,
    pub topics: TopicAdmin,
    pub subs: SubscriptionAdmin,
    /// `getIamPolicy` (the IAM mixin every Pub/Sub service serves; `tidings doctor`).
    pub iam: SchemaService,
    pub subscriber: Subscriber,
    /// Talking to a plain-text endpoint (the emulator).
    pub plain_text: bool,
    /// The configured endpoint or the emulator's (`None`: Google's).
    pub endpoint: Option<String>,
    pub base: BasePublisher,
    /// Requests tidings hands the client library, by operation (the book's Observability page lists them).
    pub calls: Arc<tidings_core::backend::calls::ApiCalls>,
    /// The REST client of publishes ([`publish`]) and dead-letter reads ([`dlq`]), or why there is none: made at the
    /// first call, not per topic or subscribe.
    rest: std::sync::OnceLock<std::result::Result<rest::Rest, String>>,
}

impl Shared {
    /// Whether the endpoint is the emulator (plain text, no IAM).
    pub fn emulated(&self) -> bool {
        self.plain_text
    }

    /// The REST client of the data plane (unary publishes and pulls), made at the first call.
    pub fn rest(&self) -> Result<&rest::Rest> {
        let rest = self
            .rest
            .get_or_init(|| rest::Rest::new(self.endpoint.as_deref(), self.plain_text).map_err(|e| e.to_string()));
        rest.as_ref().map_err(|e| Error::config(e.clone()))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("project", &self.project).field("config", &self.config).finish_non_exhaustive()
    }
}

/// The Google Cloud Pub/Sub backend.
#[derive(Debug, Clone)]
pub struct GcpBackend {
    shared: Arc<Shared>,
    publishers: Arc<tokio::sync::Mutex<HashMap<String, Publisher>>>,
    /// One driver per subscription: a subscription restarted in the same process reuses it (and its memory of acked
    /// ids on exactly-once topics) with a new stream.
    subscriptions: Arc<tokio::sync::Mutex<HashMap<String, Arc<subscribe::GcpSubscription>>>>,
}

macro_rules! connect {
    ($builder:expr, $endpoint:expr, $anonymous:expr) => {{
        let mut b = $builder;
        if let Some(ep) = $endpoint {
            b = b.with_endpoint(ep.clone());
        }
        if $anonymous {
            b = b.with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
        }
        b.build().await.map_err(|e| Error::config(format!("gcp: cannot create a client: {e}")))?
    }};
}

impl GcpBackend {
    /// Reads the `[gcp]` section and the environment (`PUBSUB_EMULATOR_HOST`, `GOOGLE_CLOUD_PROJECT`).
    pub async fn from_settings(settings: &Settings) -> Result<Self> {
        Self::new(settings.section::<GcpConfig>("gcp")?).await
    }

    /// A backend with this configuration.
    pub async fn new(config: GcpConfig) -> Result<Self> {
        config.check()?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let project = config
            .project_id
            .clone()
            .or_else(|| env("GOOGLE_CLOUD_PROJECT"))
            .or_else(|| env("GCLOUD_PROJECT"))
            .or_else(|| env("PUBSUB_PROJECT_ID"))
            .ok_or_else(|| {
                Error::config(
                    "missing config key `gcp.project_id` (set TIDINGS_GCP__PROJECT_ID or GOOGLE_CLOUD_PROJECT)",
                )
            })?;
        let emulator = env("PUBSUB_EMULATOR_HOST");
        let endpoint = config.endpoint.clone().or_else(|| emulator.as_ref().map(|h| format!("http://{h}")));
        if let Some(e) = &endpoint {
            let key = if config.endpoint.is_some() { "gcp.endpoint" } else { "PUBSUB_EMULATOR_HOST" };
            tidings_core::backend::cloud::require_tls(key, e)?;
        }
        // Plain-text endpoints (the emulator) get anonymous credentials; real credentials need TLS anyway.
        let anonymous = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
        let shared = Shared {
            topics: connect!(TopicAdmin::builder(), &endpoint, anonymous),
            subs: connect!(SubscriptionAdmin::builder(), &endpoint, anonymous),
            iam: connect!(SchemaService::builder(), &endpoint, anonymous),
            plain_text: anonymous,
            endpoint: endpoint.clone(),
            subscriber: connect!(Subscriber::builder(), &endpoint, anonymous),
            base: connect!(BasePublisher::builder(), &endpoint, anonymous),
            project,
            config,
            calls: Arc::new(tidings_core::backend::calls::ApiCalls::new("gcp")),
            rest: std::sync::OnceLock::new(),
        };
        Ok(Self { shared: Arc::new(shared), publishers: Arc::default(), subscriptions: Arc::default() })
    }

    /// Creates (`auto`) or checks (`verify`) a subscription, its topic and its dead-letter topic and subscription,
    /// without starting to receive (for deployment tooling and tests).
    pub async fn provision(&self, spec: &SubscriptionSpec) -> Result<()> {
        check_resource_name(&spec.topic.name, &spec.topic.resource)?;
        provision::subscription(&self.shared, spec).await.map(|_| ())
    }

    /// The client library's publisher of `path`, for the copies a subscription publishes (dead letters, redrives),
    /// with the library's batching defaults; the topic driver publishes with unary calls instead ([`publish`]).
    async fn publisher(&self, path: &str) -> Publisher {
        let mut p = self.publishers.lock().await;
        p.entry(path.to_string()).or_insert_with(|| self.shared.base.publisher(path).build()).clone()
    }
}

pub(crate) fn check_resource_name(spec_name: &str, resource: &str) -> Result<()> {
    if resource.len() < 3 {
        return Err(Error::invalid(format!(
            "{spec_name:?} maps to the Pub/Sub name {resource:?}, but Pub/Sub names need at least 3 characters"
        )));
    }
    Ok(())
}

/// The GCP backend's names and pricing: Pub/Sub bills throughput (publishes at least 1000 bytes a request, and each
/// subscription's delivery of what its topic published).
pub fn info() -> BackendInfo {
    const PRICING: &[Priced] = &[
        Priced::new("pubsub:Publish", "Pub/Sub", Billed::Published { min_request_bytes: 1000 }),
        Priced::new("pubsub:Pull", "Pub/Sub", Billed::Pulled),
        Priced::new("pubsub:StreamingPull", "Pub/Sub", Billed::Pulled),
        Priced::new("pubsub:", "Pub/Sub", Billed::Free),
    ];
    BackendInfo::new("gcp")
        .with_messaging_system("gcp_pubsub", "gcp_pubsub")
        .with_provisioning(false)
        .with_pricing(PRICING)
}

#[async_trait]
impl Backend for GcpBackend {
    fn name(&self) -> &str {
        "gcp"
    }

    fn info(&self) -> BackendInfo {
        info()
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        // Message ordering hands out a key's messages in order, but not one at a time (the service streams a key's
        // later messages before the earlier one is acked): core's sequencer completes it.
        c.ordering = false;
        c.exactly_once = true;
        c.nack_delay = false;
        c.max_message_size = 10_000_000 - METADATA_RESERVE;
        // Core's batcher sizes and paces the Publish calls (one per batch; `gcp.publish_batch_*`, checked in `new`).
        let config = &self.shared.config;
        c.max_publish_batch = config.publish_batch_messages as usize;
        c.max_publish_bytes = config.publish_batch_bytes as usize;
        c.publish_overhead = METADATA_RESERVE;
        c.publish_linger = config.publish_batch_delay;
        // Calls in flight per unordered topic, each on a pooled HTTP connection (ordered topics: one, by core).
        c.publish_in_flight = 64;
        c.max_receive_batch = 100;
        // The streaming pull's flow control gives the handlers at most 10,000 messages per subscription and process
        // (`subscribe::outstanding`, beside the room for held delayed messages): batches of 1,000 leave room for
        // several running beside the one gathered.
        c.max_batch_messages = 1000;
        // 100 per message: one is tidings' own, and the trace attributes of Google's libraries when configured.
        c.max_attributes = if self.shared.config.google_trace_attributes { 97 } else { 99 };
        c
    }

    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>> {
        check_resource_name(&spec.name, &spec.resource)?;
        let path = provision::topic_path(&self.shared, spec);
        provision::topic(&self.shared, &path).await?;
        Ok(Arc::new(publish::GcpTopic::new(self.shared.clone(), path, spec.config.ordered)))
    }

    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>> {
        check_resource_name(&spec.topic.name, &spec.topic.resource)?;
        let mut subs = self.subscriptions.lock().await;
        if let Some(s) = subs.get(&spec.resource) {
            s.reopen(spec).await;
            return Ok(s.clone());
        }
        let paths = provision::subscription(&self.shared, spec).await?;
        let topic_publisher = self.publisher(&paths.topic).await;
        let dlq_publisher = self.publisher(&paths.dlq_topic).await;
        let sub = Arc::new(subscribe::GcpSubscription::start(
            self.shared.clone(),
            paths,
            spec.name.clone(),
            spec,
            topic_publisher,
            dlq_publisher,
        ));
        subscribe::GcpSubscription::spawn_reaper(&sub);
        subs.insert(spec.resource.clone(), sub.clone());
        Ok(sub)
    }

    fn api_calls(&self) -> Option<&tidings_core::backend::calls::ApiCalls> {
        Some(&self.shared.calls)
    }

    fn admin(&self) -> Option<Arc<dyn tidings_core::admin::Admin>> {
        Some(Arc::new(admin::GcpAdmin::new(self.shared.clone())))
    }
}
