//! The three traits a backend implements: [`Backend`] (provisioning, capabilities, operator access) and the two batch
//! drivers, [`TopicDriver`] and [`SubscriptionDriver`].

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    AckId, Capabilities, DeadLetterRequest, OutgoingMessage, PublishReport, ReceivedMessage, SubscriptionSpec,
    TopicSpec,
};
use super::{BackendInfo, DeadLetters};
use crate::error::Result;

/// Entry point of a backend: provisions (or verifies) resources and hands out drivers.
#[async_trait]
pub trait Backend: Send + Sync + Debug + 'static {
    /// Short name, such as `local`, `aws`, `gcp`.
    fn name(&self) -> &str;
    /// Its names and pricing, read by tracing, the CLI and the dashboard. The default: [`Backend::name`], with no
    /// price.
    fn info(&self) -> BackendInfo {
        BackendInfo::named(self.name())
    }
    /// What the backend does natively.
    fn capabilities(&self) -> Capabilities;
    /// Ensures (or verifies, by provisioning mode) the topic and returns its publisher driver.
    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>>;
    /// Ensures (or verifies) the subscription and its DLQ, and returns its driver.
    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>>;
    /// Operator access (the `tidings` CLI, the dashboard) where the backend's state lives outside one process.
    fn admin(&self) -> Option<Arc<dyn super::Admin>> {
        None
    }
    /// The API calls (or server round trips) this backend counts, where it makes any.
    fn api_calls(&self) -> Option<&crate::backend::calls::ApiCalls> {
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

    /// Cancels the scheduled message `id` (published with a due time not yet reached) in every subscription of the
    /// topic: `Ok(true)` when one was removed, `Ok(false)` when none waits (unknown, already due, or delivered).
    /// `Unsupported` where the backend cannot (the default: held backends carry the message in the broker already).
    async fn cancel(&self, id: &crate::MessageId) -> Result<bool> {
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!("cancelling scheduled message {id} is not supported by this backend"),
        ))
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
    /// The subscription's dead-letter queue: the one dead-letter surface through which the `Subscription` handle
    /// and the operator read, redrive and purge it. `None` only for a driver without one (a test double); its
    /// subscription's dead-letter reads are then `Unsupported`.
    fn dead_letter_queue(self: Arc<Self>) -> Option<Arc<dyn DeadLetters>> {
        None
    }
    /// Delayed delivery completed by core: publishes a fresh copy of each of these deliveries into this subscription
    /// only (other subscriptions of the topic must not see it), with the same id, payload, ordering key, publish time
    /// and trace context, its attributes as given (the runtime has removed the due-time attribute), and a delivery
    /// count starting again at 1 (a broker-side de-duplication id of its own, so exactly-once topics do not drop it);
    /// then removes the deliveries. Each backend's dead-letter restore does the same from its dead-letter queue. The
    /// default: `Unsupported`, and the runtime hands a due delivery to its handler as it is.
    async fn requeue(&self, messages: Vec<ReceivedMessage>) -> Result<()> {
        let _ = messages;
        Err(crate::Error::new(crate::ErrorKind::Unsupported, "requeue is not supported by this backend"))
    }
    /// Called when a subscription's runner has stopped and its settlements were applied: flush anything the driver
    /// still buffers (acks batched by a client library, say). The driver may be used again afterwards.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
    /// Messages not yet acked or dead-lettered (ready, delayed or leased), where the backend can tell.
    async fn backlog(&self) -> Result<Option<u64>> {
        Ok(None)
    }
    /// The backlog with its scheduled messages apart ([`BacklogDetail`](super::BacklogDetail)), where the backend
    /// can tell. The default reports [`SubscriptionDriver::backlog`] with `scheduled` unknown: right for a backend
    /// whose delayed messages the runtime holds (they are in flight as the broker sees them). A backend that keeps
    /// delays itself ([`Capabilities::delay`]) and reports its backlog counts, in one read, the messages published
    /// with a due time not reached yet and never delivered (not those waiting out a retry backoff).
    async fn backlog_detail(&self) -> Result<super::BacklogDetail> {
        Ok(super::BacklogDetail::new(self.backlog().await?))
    }
}
