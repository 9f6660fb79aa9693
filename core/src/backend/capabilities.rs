//! What a backend does natively, and what the portable layer completes for it.

use std::time::Duration;

/// What a backend can do natively, as [`crate::Backend::capabilities`] declares it. The runtime fills gaps
/// client-side: [`Capabilities::completed`] is what a bus offers on the backend ([`crate::Bus::capabilities`], which
/// the conformance suite reads).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The broker itself delivers messages sharing an ordering key in order, one at a time: it hands out a key's next
    /// message only once the previous one was acked or dead-lettered (a retried one keeps its place). Where it does
    /// not, core completes it: on ordered topics the runtime's sequencer keeps one message per key out and parks the
    /// key's later ones (leases kept alive) until then, so ordered topics work on every backend. A backend that hands
    /// out a key's messages in order but not one at a time (NATS JetStream, Pub/Sub with message ordering) declares
    /// `false`.
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
    /// Most ack ids, nack items, lease-extension ids or dead letters per settle call (`SubscriptionDriver::ack`,
    /// `nack`, `extend_lease`, `dead_letter`): the runtime splits larger settlements into calls of at most this many,
    /// so a driver makes one broker call per settle call and never chunks (SQS: 10 entries per `DeleteMessageBatch`;
    /// SQL: one statement). The default sets no limit (the runtime gathers at most 1,000 settlements per call).
    pub max_settle_batch: usize,
    /// Most messages one batch handler call may take ([`crate::SubscriptionConfig::max_messages`] above it is refused
    /// at [`crate::Bus::subscribe_batch`]). The runtime gathers a batch from as many receives as it takes (each of at
    /// most [`Capabilities::max_receive_batch`]), so this is not a receive limit: it bounds what one handler call
    /// holds leased, whose leases are extended and which are settled together, in calls of at most
    /// [`Capabilities::max_settle_batch`]. Default 1,000.
    pub max_batch_messages: usize,
    /// Most attributes per message (tidings reserves none on the local bus).
    pub max_attributes: usize,
    /// [`SubscriptionDriver::backlog`](super::SubscriptionDriver::backlog) reports how many messages wait (so
    /// `Subscription::backlog` is `Some` and `Subscription::wait_idle` works); Pub/Sub cannot tell.
    pub backlog: bool,
    /// Delayed delivery is native: the backend keeps a message published with a due time
    /// ([`OutgoingMessage::deliver_at`](super::OutgoingMessage::deliver_at)) from every subscription until then, up to
    /// [`Capabilities::max_native_delay`] (local: a delay heap; SQL: `visible_at`). Otherwise core completes it: the
    /// due time travels in the [`DELIVER_AT_ATTRIBUTE`](super::wire::DELIVER_AT_ATTRIBUTE) attribute, and the runtime
    /// holds an early delivery without running the handler (a nack of at most [`Capabilities::max_nack_delay`], or in
    /// process), then requeues a fresh copy at its due time, so attempts count from the first real one.
    pub delay: bool,
    /// Longest delay the backend keeps natively (zero where [`Capabilities::delay`] is false).
    pub max_native_delay: Duration,
    /// Longest delay one `nack` may ask for (SQS: 12 h of visibility); zero where holding by nack is not possible (the
    /// runtime then holds a delayed message in process, lease kept alive).
    pub max_nack_delay: Duration,
    /// How long before its due time a delivery held by a nack is asked back, to wait out the rest in process: a nack's
    /// delay that ends late by up to this much still brings it back before due. Zero where a delayed nack ends on
    /// time (JetStream's `Nak` with delay, in milliseconds); SQS: 3 s (visibility is whole seconds, rounded up; an
    /// expired visibility takes effect up to a second late, as on LocalStack, which makes messages visible again
    /// once a second; and a second for the receive that takes it back). The runtime holds by nack only while more
    /// than this plus a second is left.
    pub nack_hold_lead: Duration,
    /// Longest delay a publish may ask for: how long the backend keeps an undelivered message at most (its retention
    /// ceiling). The bus also refuses a delay beyond the retention of its own subscriptions to the topic.
    pub max_delay: Duration,
    /// A subscription's backlog can be bounded ([`crate::SubscriptionConfig::max_backlog`]): publishes wait or fail
    /// at the limit. The in-memory bus; brokers keep backlogs on disk under their own limits.
    pub bounded_backlog: bool,
}

impl Capabilities {
    /// What a bus on this backend offers: these native capabilities, completed by core (as OpenDAL's
    /// `CompleteLayer` completes a service):
    ///
    /// | capability | where the backend lacks it, core completes it with |
    /// |---|---|
    /// | `ordering` | the runtime's sequencer: one message per key out, later ones parked (leases kept alive) |
    /// | `nack_delay` | the runtime holding a failed message for its backoff (lease kept alive), then a plain `nack` |
    /// | `delay` | the due time in an attribute; early deliveries held (nack with delay, or in process) and requeued at due |
    ///
    /// Every other capability is the backend's own: core checks against it and splits work by it, but does not
    /// emulate it.
    pub fn completed(&self) -> Self {
        Self { ordering: true, nack_delay: true, delay: true, ..self.clone() }
    }
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
            max_settle_batch: usize::MAX,
            max_batch_messages: 1000,
            max_attributes: 10,
            backlog: false,
            bounded_backlog: false,
            delay: false,
            max_native_delay: Duration::ZERO,
            max_nack_delay: Duration::ZERO,
            nack_hold_lead: Duration::ZERO,
            max_delay: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
