//! NATS JetStream backend of tidings, on the official `async-nats` crate: a topic is a stream, each subscription a
//! durable pull consumer with a dead-letter stream of its own. tidings' metadata travels in one header (`tidings`);
//! attributes are the other headers. Connection: `nats.url` or `NATS_URL`, credentials and TLS from the `[nats]`
//! section.
//!
//! Configuration keys, the exact stream, consumer and subject names, limits, the subject permissions per provisioning
//! mode, running it locally, and what other producers and consumers see: the book's
//! [NATS JetStream page](https://example.invalid/tidings/book/backends/nats.html), the one place those tables live.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use tidings_nats::{NatsBackend, NatsConfig};
//!
//! # async fn demo() -> tidings_core::Result<()> {
//! let mut config = NatsConfig::default(); // or NatsBackend::from_settings(&settings): the [nats] section
//! config.url = Some("tls://nats.internal:4222".into()); // default: NATS_URL, else nats://127.0.0.1:4222
//! config.creds_file = Some("/etc/nats/app.creds".into());
//! let bus = tidings_core::Bus::new(Arc::new(NatsBackend::new(config).await?));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod admin;
mod backstop;
pub mod config;
mod connect;
mod dlq;
mod error;
mod floor;
mod meta;
mod names;
mod provision;
mod publish;
mod pull;
mod settle;
mod subscribe;

use std::sync::Arc;

use async_trait::async_trait;
use tidings_core::backend::{BackendInfo, SubscriptionDriver, SubscriptionSpec, TopicDriver, TopicSpec};
use tidings_core::{Backend, Capabilities, Error, Result, Settings};

pub use config::{NatsConfig, Provisioning, Storage};
pub use connect::DEFAULT_URL;
pub use meta::{MAX_USER_ATTRIBUTES, META_ATTRIBUTE};
pub use provision::{EXACTLY_ONCE_WINDOW, STREAM_RETENTION};
/// Server round trips by operation (`PULL`, `PUBLISH.ACKS`, `FLUSH`, `STREAM.INFO`, ...): what the backend waits for.
/// Messages written without waiting (publishes before their acks, acks before the flush) are not round trips of their
/// own.
pub use tidings_core::backend::calls::ApiCalls as RoundTrips;

/// Bytes of the server's `max_payload` kept for headers: tidings' metadata, `Nats-Msg-Id`, and the header framing of
/// each attribute (a dead-letter copy adds the reason, up to 1 KiB).
pub const METADATA_RESERVE: usize = 2048;

/// Bytes of one publish call (its messages are written to the connection together).
pub const MAX_PUBLISH_BYTES: usize = 8 * 1024 * 1024;
/// What a message costs a publish call beyond payload, attributes and key: subject, `Nats-Msg-Id` and metadata.
pub const PUBLISH_OVERHEAD: usize = 256;

/// The connection and settings shared by every driver of one backend.
pub(crate) struct Shared {
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub config: NatsConfig,
    pub calls: RoundTrips,
    /// The attempts reported per consumer, so a redelivery never counts lower (see `floor`).
    pub floors: floor::Floors,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The NATS JetStream backend.
#[derive(Debug, Clone)]
pub struct NatsBackend {
    shared: Arc<Shared>,
    max_payload: usize,
}

impl NatsBackend {
    /// Reads the `[nats]` section (and `NATS_URL`) and connects.
    pub async fn from_settings(settings: &Settings) -> Result<Self> {
        Self::new(settings.section::<NatsConfig>("nats")?).await
    }

    /// Connects with this configuration.
    pub async fn new(config: NatsConfig) -> Result<Self> {
        if !(1..=60).contains(&config.wait_time.as_secs()) {
            return Err(Error::config(format!(
                "nats.wait_time {:?} is invalid: a pull waits 1-60 s",
                config.wait_time
            )));
        }
        if config.replicas == 0 || config.replicas > 5 {
            return Err(Error::config(format!(
                "nats.replicas {} is invalid: JetStream keeps 1-5 replicas",
                config.replicas
            )));
        }
        let (urls, key, raw) = connect::urls(&config)?;
        let options = connect::options(&config).await?;
        let client = options
            .connect(urls)
            .await
            .map_err(|e| Error::backend(format!("nats: cannot connect to {key} {raw:?}: {e}"), true).with_source(e))?;
        Ok(Self::with_client(client, config))
    }

    /// A backend on a client the application connected itself (its own auth callback, say).
    pub fn with_client(client: async_nats::Client, config: NatsConfig) -> Self {
        let js = async_nats::jetstream::ContextBuilder::new().timeout(config.request_timeout).build(client.clone());
        let max_payload = client.server_info().max_payload;
        floor::check_server(&client.server_info().version);
        let shared = Shared { client, js, config, calls: RoundTrips::new("nats"), floors: Default::default() };
        Self { shared: Arc::new(shared), max_payload }
    }

    /// Server round trips made so far, by operation.
    pub fn round_trips(&self) -> &RoundTrips {
        &self.shared.calls
    }

    /// The server's `max_payload` (read when connecting).
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Creates (`auto`) or checks (`verify`) a subscription's stream, consumer and dead-letter stream without
    /// starting to receive (for deployment tooling and tests).
    pub async fn provision(&self, spec: &SubscriptionSpec) -> Result<()> {
        provision::subscription(&self.shared, spec).await.map(drop)
    }
}

/// The NATS backend's names (no per-call price: the servers you run are the cost).
pub fn info() -> BackendInfo {
    BackendInfo::new("nats").with_provisioning(false)
}

#[async_trait]
impl Backend for NatsBackend {
    fn name(&self) -> &str {
        "nats"
    }

    fn info(&self) -> BackendInfo {
        info()
    }

    fn api_calls(&self) -> Option<&RoundTrips> {
        Some(&self.shared.calls)
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        // A consumer hands out a key's messages in stream order, but not one at a time: core's sequencer completes it.
        c.ordering = false;
        c.exactly_once = true;
        c.nack_delay = true;
        c.max_message_size = self.max_payload.saturating_sub(METADATA_RESERVE);
        c.max_publish_batch = 256;
        c.max_publish_bytes = MAX_PUBLISH_BYTES;
        c.publish_overhead = PUBLISH_OVERHEAD;
        // With a linger, concurrent publishes share a call: written at once, their acks awaited together.
        c.publish_linger = self.shared.config.publish_linger;
        c.publish_in_flight = 64;
        c.max_receive_batch = 256;
        // One pull at a time per subscription (they share its inbox); a pull takes up to every free handler slot.
        c.concurrent_receives = 1;
        // `MaxAckPending` is unlimited: a batch subscription's pulls are sized by its batches, as any subscription's
        // by its free handler slots.
        c.max_batch_messages = 10_000;
        c.max_attributes = MAX_USER_ATTRIBUTES;
        c.backlog = true;
        // Delayed delivery is held by core (message schedules need server 2.12): a `Nak` with the time left (any
        // length; capped at a day so a hold is checked again daily), then a copy addressed to the consumer when due.
        c.max_nack_delay = std::time::Duration::from_secs(24 * 3600);
        c
    }

    /// Operator access: streams and consumers under the prefix, consumer figures, the dead-letter streams.
    fn admin(&self) -> Option<Arc<dyn tidings_core::admin::Admin>> {
        Some(Arc::new(admin::NatsAdmin { s: self.shared.clone() }))
    }

    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>> {
        let names = provision::topic(&self.shared, spec).await?;
        Ok(Arc::new(publish::NatsTopic { s: self.shared.clone(), names, ordered: spec.config.ordered }))
    }

    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>> {
        let names = provision::subscription(&self.shared, spec).await?;
        Ok(Arc::new(subscribe::NatsSubscription::new(self.shared.clone(), names, spec)))
    }
}
