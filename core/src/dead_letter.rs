//! Dead letters: messages that left a subscription after exhausting retries, failing to decode, or an
//! unrecoverable error, kept with the reason so they can be read and redriven.

use std::time::SystemTime;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::message::{Attributes, MessageId};

/// One message in a subscription's dead-letter queue.
///
/// Built with [`DeadLetter::new`] and the `with_*` methods (the struct is `#[non_exhaustive]`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Message id.
    pub id: MessageId,
    /// Encoded payload, as published.
    pub payload: Bytes,
    /// Attributes, as published.
    pub attributes: Attributes,
    /// Ordering key.
    pub ordering_key: Option<String>,
    /// When it was published.
    pub publish_time: SystemTime,
    /// Deliveries made before it was dead-lettered.
    pub attempts: u32,
    /// The last error.
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
    /// With these attributes.
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }
    /// With this ordering key.
    pub fn with_ordering_key(mut self, key: Option<String>) -> Self {
        self.ordering_key = key;
        self
    }

    /// Decodes the payload as `T` (fails for poison messages, by definition).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}
