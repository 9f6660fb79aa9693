//! The backend SPI: a narrow, batch-oriented driver that never retries. The portable layer ([`crate::Bus`] and
//! the runtime) owns encoding, validation, dispatch, concurrency, backoff, attempt counting, dead-letter decisions,
//! lease extension and shutdown.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::dead_letter::DeadLetter;
use crate::error::Result;
use crate::message::{Attributes, MessageId};
use crate::subscription::SubscriptionConfig;
use crate::topic::TopicConfig;
use crate::trace::TraceContext;

/// What a backend can do natively. The runtime fills gaps client-side, and the conformance suite reads these flags.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Messages sharing an ordering key are delivered in order, one at a time.
    pub ordering: bool,
    /// Acked messages are never redelivered and republished ids are de-duplicated.
    pub exactly_once: bool,
    /// `nack` honours a per-message delay; otherwise the runtime holds the message (lease kept) for the backoff.
    pub nack_delay: bool,
    /// Largest encoded payload plus attributes, in bytes.
    pub max_message_size: usize,
    /// Most messages per `publish` call (where [`Capabilities::atomic_publish`], per call that coalesces concurrent
    /// publishes only).
    pub max_publish_batch: usize,
    /// A `publish` call of any size is all or nothing (one database transaction; the in-memory bus under its locks),
    /// so the portable layer sends each `publish_batch` and each `publish_prepared` batch (an outbox relay's) whole, in
    /// one call, whatever `max_publish_batch` and `max_publish_bytes` say: a batch is then accepted whole or not at
    /// all. Otherwise a batch is split into calls of those sizes, each accepted (or each message, where the backend
    /// reports per message) on its own.
    pub atomic_publish: bool,
    /// Most bytes per `publish` call: the sum over its messages of payload, attributes, ordering key and
    /// [`Capabilities::publish_overhead`] (a single message always fits).
    pub max_publish_bytes: usize,
    /// Bytes a message costs a publish call beyond payload, attributes and key (metadata, framing).
    pub publish_overhead: usize,
    /// How long a publish waits for concurrent publishes to share its call; zero sends each publish (or batch) at
    /// once. The portable layer does the coalescing; the driver only sees the batches.
    pub publish_linger: std::time::Duration,
    /// Publish calls the portable layer keeps in flight per topic when it coalesces (ordered topics: one).
    pub publish_in_flight: usize,
    /// Most messages per `receive` call.
    pub max_receive_batch: usize,
    /// `receive` calls the runtime may have in flight at once for one subscription of an unordered topic: above 1
    /// only where `receive` is safe to call concurrently and a call's round trip is worth overlapping (SQS hands out
    /// at most 10 messages a call). The runtime adds a call only while the previous one came back full.
    pub concurrent_receives: usize,
    /// Most attributes per message (tidings reserves none on the local bus).
    pub max_attributes: usize,
    /// [`SubscriptionDriver::backlog`] reports how many messages wait (so `Subscription::backlog` is `Some` and
    /// `Subscription::wait_idle` works); Pub/Sub cannot tell.
    pub backlog: bool,
    /// A subscription's backlog can be bounded ([`crate::SubscriptionConfig::max_backlog`]): publishes wait or fail
    /// at the limit. The in-memory bus; brokers keep backlogs on disk under their own limits.
    pub bounded_backlog: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            ordering: false,
            exactly_once: false,
            nack_delay: false,
            max_message_size: 256 * 1024,
            max_publish_batch: 10,
            atomic_publish: false,
            max_publish_bytes: usize::MAX,
            publish_overhead: 0,
            publish_linger: Duration::ZERO,
            publish_in_flight: 1,
            max_receive_batch: 10,
            concurrent_receives: 1,
            max_attributes: 10,
            backlog: false,
            bounded_backlog: false,
        }
    }
}

/// A topic as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSpec {
    /// Logical name used in code.
    pub name: String,
    /// Name of the cloud resource (prefix and overrides from config applied).
    pub resource: String,
    /// Settings from the declaration.
    pub config: TopicConfig,
}

impl TopicSpec {
    /// A topic spec.
    pub fn new(name: impl Into<String>, resource: impl Into<String>, config: TopicConfig) -> Self {
        Self { name: name.into(), resource: resource.into(), config }
    }
}

/// A subscription as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionSpec {
    /// The topic it belongs to.
    pub topic: TopicSpec,
    /// Logical name used in code.
    pub name: String,
    /// Name of the cloud resource.
    pub resource: String,
    /// Effective settings (code, then config overrides).
    pub config: SubscriptionConfig,
}

impl SubscriptionSpec {
    /// A subscription spec.
    pub fn new(
        topic: TopicSpec,
        name: impl Into<String>,
        resource: impl Into<String>,
        config: SubscriptionConfig,
    ) -> Self {
        Self { topic, name: name.into(), resource: resource.into(), config }
    }
}

/// A message on its way to the backend, already encoded and validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutgoingMessage {
    /// Assigned by tidings; reused when the same message is published again.
    pub id: MessageId,
    /// Encoded payload.
    pub payload: Bytes,
    /// Attributes.
    pub attributes: Attributes,
    /// Ordering key.
    pub ordering_key: Option<Arc<str>>,
    /// Publish time.
    pub publish_time: SystemTime,
    /// Trace context captured at publish (or when an outbox row was written), to carry in tidings' own metadata.
    pub trace: Option<TraceContext>,
}

impl OutgoingMessage {
    /// An outgoing message.
    #[inline]
    pub fn new(
        id: MessageId,
        payload: Bytes,
        attributes: Attributes,
        ordering_key: Option<Arc<str>>,
        publish_time: SystemTime,
    ) -> Self {
        Self { id, payload, attributes, ordering_key, publish_time, trace: None }
    }

    /// The same message carrying `trace`.
    #[inline]
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }
}

/// What became of a publish call's messages: the backend refused those listed (by index in the batch, with each
/// one's error) and accepted the rest. The default accepted everything.
#[derive(Debug, Default)]
pub struct PublishReport {
    failed: Vec<(usize, crate::Error)>,
}

impl PublishReport {
    /// Every message was accepted.
    pub fn accepted() -> Self {
        Self::default()
    }

    /// The message at `index` of the batch was refused with `error`.
    pub fn refuse(&mut self, index: usize, error: crate::Error) {
        self.failed.push((index, error));
    }

    /// The refused messages, by index.
    pub fn failures(&self) -> &[(usize, crate::Error)] {
        &self.failed
    }

    /// The refused messages, by index, taken.
    pub fn into_failures(self) -> Vec<(usize, crate::Error)> {
        self.failed
    }
}

/// Opaque token naming one delivery of one message, for ack, nack and lease extension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AckId {
    /// A numeric token (in-memory backends).
    Num(u64),
    /// A receipt handle or ack id string (cloud backends).
    Text(Arc<str>),
}

/// A message handed out by `receive`, leased for the subscription's ack deadline.
///
/// Built with [`ReceivedMessage::new`] and the `with_*` methods (the struct is `#[non_exhaustive]`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReceivedMessage {
    /// Token for settling this delivery.
    pub ack_id: AckId,
    /// Message id.
    pub id: MessageId,
    /// Encoded payload, as published.
    pub payload: Bytes,
    /// Attributes, as published.
    pub attributes: Attributes,
    /// Ordering key.
    pub ordering_key: Option<Arc<str>>,
    /// Publish time.
    pub publish_time: SystemTime,
    /// Delivery attempt, 1 for the first delivery.
    pub attempt: u32,
    /// Trace context the message carries (see [`crate::trace`]); `None` for messages published without one.
    pub trace: Option<TraceContext>,
}

impl ReceivedMessage {
    /// A delivery without attributes, ordering key or trace context.
    #[inline]
    pub fn new(ack_id: AckId, id: MessageId, payload: Bytes, publish_time: SystemTime, attempt: u32) -> Self {
        Self {
            ack_id,
            id,
            payload,
            attributes: Attributes::new(),
            ordering_key: None,
            publish_time,
            attempt,
            trace: None,
        }
    }
    /// With these attributes.
    #[inline]
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }
    /// With this ordering key.
    #[inline]
    pub fn with_ordering_key(mut self, key: Option<Arc<str>>) -> Self {
        self.ordering_key = key;
        self
    }
    /// With this trace context.
    #[inline]
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }
}

/// A message the runtime moves to the DLQ, with the reason.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetterRequest {
    /// The delivery to dead-letter.
    pub message: ReceivedMessage,
    /// Why: the last error, a decode error, or an unrecoverable error.
    pub reason: String,
}

impl DeadLetterRequest {
    /// Dead-letters `message` because of `reason`.
    pub fn new(message: ReceivedMessage, reason: impl Into<String>) -> Self {
        Self { message, reason: reason.into() }
    }
}

/// Entry point of a backend: provisions (or verifies) resources and hands out drivers.
#[async_trait]
pub trait Backend: Send + Sync + Debug + 'static {
    /// Short name, such as `local`, `aws`, `gcp`.
    fn name(&self) -> &str;
    /// What the backend does natively.
    fn capabilities(&self) -> Capabilities;
    /// Ensures (or verifies, by provisioning mode) the topic and returns its publisher driver.
    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>>;
    /// Ensures (or verifies) the subscription and its DLQ, and returns its driver.
    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>>;
    /// Operator access (the `tidings` CLI, the dashboard) where the backend's state lives outside one process.
    fn admin(&self) -> Option<Arc<dyn crate::admin::Admin>> {
        None
    }
    /// The API calls (or server round trips) this backend counts, where it makes any.
    fn api_calls(&self) -> Option<&crate::calls::ApiCalls> {
        None
    }
}

/// Publishes to one topic.
#[async_trait]
pub trait TopicDriver: Send + Sync + Debug {
    /// Publishes at most `max_publish_batch` messages (and `max_publish_bytes`) in one call, or a whole batch of any
    /// size where [`Capabilities::atomic_publish`] (all or nothing, then), without retrying:
    /// `Err` when the call failed as a whole, otherwise a report of the messages the backend refused (each with its
    /// own error and retryable flag). The portable layer retries what is retryable.
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport>;

    /// Publishes without waiting, where the backend can (an in-process bus): `Some` with the outcome of the whole
    /// batch, or `None` to have the caller use `publish`. Spares the boxed future of an async call on the hottest
    /// path there is; network backends keep the default.
    ///
    /// All or nothing: on `Some(Ok(()))` every message was accepted, and the batch is the driver's: it may have moved
    /// the payloads out (the caller keeps only the ids). Otherwise it must leave the batch as it found it, for
    /// `publish` to send.
    fn publish_now(&self, batch: &mut [OutgoingMessage]) -> Option<Result<()>> {
        let _ = batch;
        None
    }
}

/// Receives from and settles deliveries of one subscription. Every method is one batch call and does not retry.
#[async_trait]
pub trait SubscriptionDriver: Send + Sync + Debug {
    /// Waits up to `wait` for messages and leases at most `max` of them for the ack deadline.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>>;
    /// Removes these deliveries from the subscription.
    async fn ack(&self, ids: Vec<AckId>) -> Result<()>;
    /// Returns deliveries for redelivery after each one's delay (zero when `nack_delay` is unsupported).
    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()>;
    /// Extends the lease of these deliveries to `by` from now.
    async fn extend_lease(&self, ids: Vec<AckId>, by: Duration) -> Result<()>;
    /// Moves deliveries to the subscription's dead-letter queue with their reason.
    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()>;
    /// Reads up to `max` dead letters without removing them.
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>>;
    /// Moves dead letters (all, or those with the given ids) back into the subscription with the attempt counter
    /// reset; returns how many moved.
    async fn redrive(&self, ids: Option<Vec<MessageId>>) -> Result<usize>;
    /// Called when a subscription's runner has stopped and its settlements were applied: flush anything the driver
    /// still buffers (acks batched by a client library, say). The driver may be used again afterwards.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
    /// Messages not yet acked or dead-lettered (ready, delayed or leased), where the backend can tell.
    async fn backlog(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}
