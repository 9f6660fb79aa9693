//! A subscription's dead-letter queue as a backend keeps it: messages that left the subscription after exhausting
//! retries, failing to decode, or an unrecoverable error, kept with the reason, and the one surface ([`DeadLetters`])
//! through which the portable layer reads, restores and deletes them, for the `Subscription` handle and for the
//! operator alike. The select, pace and move loop over it is written once, in core.

use std::fmt::Debug;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::AckId;
use crate::error::Result;
use crate::message::{Attributes, MessageId};
use crate::trace::TraceContext;

/// One message in a subscription's dead-letter queue.
///
/// Built with [`DeadLetter::new`] and the `with_*` methods (the struct is `#[non_exhaustive]`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The id it was published with; a redrive publishes it again under the same id, into this subscription only.
    pub id: MessageId,
    /// Encoded payload, as published.
    pub payload: Bytes,
    /// Attributes, as published.
    pub attributes: Attributes,
    /// The ordering key it was published with, on an ordered topic.
    pub ordering_key: Option<String>,
    /// When it was first published (not when it was dead-lettered).
    pub publish_time: SystemTime,
    /// Deliveries made before it was dead-lettered.
    pub attempts: u32,
    /// Why it was dead-lettered: the last failure's text, such as the handler's error, `handler panicked: ...`, or
    /// `poison message: payload cannot be decoded as ...`. The dashboard and `tidings dlq` group letters by it.
    pub reason: String,
    /// When it was dead-lettered.
    pub dead_lettered_at: SystemTime,
}

impl DeadLetter {
    /// A dead letter without attributes or ordering key.
    pub fn new(
        id: MessageId,
        payload: Bytes,
        publish_time: SystemTime,
        attempts: u32,
        reason: impl Into<String>,
        dead_lettered_at: SystemTime,
    ) -> Self {
        Self {
            id,
            payload,
            attributes: Attributes::new(),
            ordering_key: None,
            publish_time,
            attempts,
            reason: reason.into(),
            dead_lettered_at,
        }
    }
    /// The same letter with the attributes it was published with.
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }
    /// The same letter with the ordering key it was published with (`None`: unordered).
    pub fn with_ordering_key(mut self, key: Option<String>) -> Self {
        self.ordering_key = key;
        self
    }

    /// Decodes the payload as `T` (fails for poison messages, by definition).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

/// A dead letter as a read hands it out: the letter, and what the backend needs to restore or delete it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HeldLetter {
    /// The backend's handle of this copy (a receipt handle, an ack id, a sequence or row number).
    pub handle: AckId,
    /// The letter as the operator sees it (id, payload, reason, attempts, times).
    pub letter: DeadLetter,
    /// The trace context the message carried, for its restored copy.
    pub trace: Option<TraceContext>,
}

impl HeldLetter {
    /// A letter read under `handle`.
    pub fn new(handle: AckId, letter: DeadLetter) -> Self {
        Self { handle, letter, trace: None }
    }
    /// With the trace context the message carried.
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }
}

/// One read of a dead-letter queue: the letters, and where the next read goes on from.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct LetterPage {
    /// The letters read, oldest first where the backend keeps an order.
    pub letters: Vec<HeldLetter>,
    /// The cursor to pass to the next read; `None` when the queue was read through. Backends whose reads lease what
    /// they hand out (SQS, Pub/Sub) go on by themselves: they return any cursor while a read still finds letters.
    pub next: Option<String>,
}

impl LetterPage {
    /// A page of `letters` going on at `next`.
    pub fn new(letters: Vec<HeldLetter>, next: Option<String>) -> Self {
        Self { letters, next }
    }
}

/// A subscription's dead-letter queue: read it page by page, restore letters into the subscription, delete them.
/// Every method is one batch call and does not retry; core's sweep (select, pace, move) drives it.
#[async_trait]
pub trait DeadLetters: Send + Sync + Debug {
    /// Reads up to `max` dead letters after `cursor` (`None`: from the start) without removing them. A backend whose
    /// reads lease messages holds what it hands out until it is restored, deleted or released, so one pass sees each
    /// letter once.
    async fn read(&self, cursor: Option<&str>, max: usize) -> Result<LetterPage>;
    /// Moves these letters back into the subscription: each one's message (payload, attributes, ordering key,
    /// publish time, id, trace context) is published again with its attempt counter reset, and only once that copy
    /// was accepted is the dead letter removed, so an interruption leaves a message in one place or, at worst, both.
    async fn restore(&self, letters: Vec<HeldLetter>) -> Result<()>;
    /// Removes these dead letters for good.
    async fn delete(&self, handles: Vec<AckId>) -> Result<()>;
    /// Gives back what reads hold and were neither restored nor deleted (leasing backends; others hold nothing).
    async fn release(&self, handles: Vec<AckId>) -> Result<()> {
        let _ = handles;
        Ok(())
    }
}
