//! Dead letters: messages that left a subscription after exhausting retries, failing to decode, or an
//! unrecoverable error, kept with the reason so they can be read and redriven.

use std::time::SystemTime;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::message::{Attributes, MessageId};

/// One message in a subscription's dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Decodes the payload as `T` (fails for poison messages, by definition).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}
