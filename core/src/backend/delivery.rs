//! Messages crossing the contract: what a topic driver publishes, what a subscription driver hands out, and the
//! tokens that settle a delivery.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::message::{Attributes, MessageId};
use crate::trace::TraceContext;

/// A message on its way to the backend, already encoded and validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutgoingMessage {
    /// Assigned by tidings; reused when the same message is published again.
    pub id: MessageId,
    /// The payload as encoded at publish: the backend stores these bytes and hands them back unchanged.
    pub payload: Bytes,
    /// The application's attributes, already checked against the backend's
    /// [`max_attributes`](super::Capabilities::max_attributes) and the reserved `tidings` prefix; every delivery must
    /// return them as they are.
    pub attributes: Attributes,
    /// The ordering key on an ordered topic (`None` on others): a backend with native ordering delivers a key's
    /// messages one at a time in publish order; otherwise core's sequencer does.
    pub ordering_key: Option<Arc<str>>,
    /// When it was published (for an outbox row, when the row was written); every delivery reports it unchanged.
    pub publish_time: SystemTime,
    /// Trace context captured at publish (or when an outbox row was written), to carry in tidings' own metadata.
    pub trace: Option<TraceContext>,
    /// Deliver to no subscription before this time ([`crate::PublishOptions::deliver_at`]); `None` delivers at once.
    /// Backends with native delay ([`super::Capabilities::delay`]) honour it; for the others core has already put it
    /// in the [`DELIVER_AT_ATTRIBUTE`](super::wire::DELIVER_AT_ATTRIBUTE) attribute and they ignore it.
    pub deliver_at: Option<SystemTime>,
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
        Self { id, payload, attributes, ordering_key, publish_time, trace: None, deliver_at: None }
    }

    /// The same message due at `at` (`None`: at once).
    #[inline]
    pub fn with_deliver_at(mut self, at: Option<SystemTime>) -> Self {
        self.deliver_at = at;
        self
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
    /// The id given at publish (read back from tidings' metadata; a foreign producer's message gets the broker's id).
    pub id: MessageId,
    /// Encoded payload, as published.
    pub payload: Bytes,
    /// Attributes, as published.
    pub attributes: Attributes,
    /// The ordering key given at publish, on an ordered topic.
    pub ordering_key: Option<Arc<str>>,
    /// When it was published: the time tidings recorded at publish, or the broker's for a foreign producer's message.
    pub publish_time: SystemTime,
    /// Delivery attempt, 1 for the first delivery.
    pub attempt: u32,
    /// Trace context the message carries (see [`crate::trace`]); `None` for messages published without one.
    pub trace: Option<TraceContext>,
    /// The message's position in the broker's own order, where it keeps one (a NATS JetStream stream sequence);
    /// `None` elsewhere. On an ordered topic without native ordering, the runtime lines up the messages waiting behind
    /// a key by it, so a redelivery of an earlier message goes ahead of later ones that arrived before it; without
    /// it, they wait in the order they arrived.
    pub sequence: Option<u64>,
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
            sequence: None,
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
    /// At this position in the broker's own order ([`ReceivedMessage::sequence`]).
    #[inline]
    pub fn with_sequence(mut self, sequence: Option<u64>) -> Self {
        self.sequence = sequence;
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
