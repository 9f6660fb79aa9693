//! Publishing: every message of a batch is written to the connection at once (each with `Nats-Msg-Id` = its tidings
//! id), then the batch waits for all the stream's acks together: one round trip per batch, not per message.

use std::future::IntoFuture;
use std::sync::Arc;

use async_nats::jetstream::context::PublishErrorKind;
use async_trait::async_trait;
use tidings_core::backend::{OutgoingMessage, TopicDriver};
use tidings_core::{Error, ErrorKind, Result};

use crate::meta::{check_attribute, headers, micros, Meta};
use crate::names::TopicNames;
use crate::Shared;

/// Publisher of one topic's stream.
#[derive(Debug)]
pub struct NatsTopic {
    pub(crate) s: Arc<Shared>,
    pub(crate) names: TopicNames,
    pub(crate) ordered: bool,
}

fn publish_error(stream: &str, e: async_nats::jetstream::context::PublishError) -> Error {
    let msg = format!("nats: publish to stream {stream} failed: {e}");
    match e.kind() {
        PublishErrorKind::StreamNotFound => Error::new(
            ErrorKind::NotFound,
            format!("{msg} (no stream takes its subject: create it, or set nats.provisioning = \"auto\")"),
        ),
        PublishErrorKind::MaxPayloadExceeded => Error::new(ErrorKind::MessageTooLarge, msg),
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => Error::backend(msg, false),
        _ => Error::backend(msg, true),
    }
}

#[async_trait]
impl TopicDriver for NatsTopic {
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<()> {
        // Checked whole first: a batch is never half-sent because of a bad attribute.
        for m in batch {
            for (k, v) in &m.attributes {
                check_attribute(&self.names.stream, k, v)?;
            }
        }
        let mut acks = Vec::with_capacity(batch.len());
        for m in batch {
            let key = m.ordering_key.as_deref().filter(|_| self.ordered);
            let meta = Meta {
                id: m.id.to_string(),
                ts: micros(m.publish_time),
                key: key.map(str::to_string),
                ..Default::default()
            };
            let h = headers(&meta.id, &meta, &m.attributes);
            let ack = self
                .s
                .js
                .publish_with_headers(self.names.subject(key), h, m.payload.clone())
                .await
                .map_err(|e| publish_error(&self.names.stream, e))?;
            acks.push(ack.into_future());
        }
        self.s.calls.count("PUBLISH.ACKS");
        for r in futures_util::future::join_all(acks).await {
            r.map_err(|e| publish_error(&self.names.stream, e))?;
        }
        Ok(())
    }
}
