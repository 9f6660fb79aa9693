//! Publishing: every message of a batch is written to the connection at once (each with `Nats-Msg-Id` = its tidings
//! id), then the batch waits for all the stream's acks together: one round trip per batch, not per message.

use std::future::IntoFuture;
use std::sync::Arc;

use async_nats::jetstream::context::PublishErrorKind;
use async_trait::async_trait;
use tidings_core::backend::{OutgoingMessage, PublishReport, TopicDriver};
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
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport> {
        // Checked whole first: a batch is never half-sent because of a bad attribute.
        for m in batch {
            for (k, v) in &m.attributes {
                check_attribute(&self.names.stream, k, v)?;
            }
        }
        let mut acks = Vec::with_capacity(batch.len());
        let mut report = PublishReport::accepted();
        for (i, m) in batch.iter().enumerate() {
            let key = m.ordering_key.as_deref().filter(|_| self.ordered);
            let meta = Meta {
                id: m.id.to_string(),
                ts: micros(m.publish_time),
                key: key.map(str::to_string),
                trace: m.trace.clone(),
                ..Default::default()
            };
            let h = headers(&meta.id, &meta, &m.attributes);
            match self.s.js.publish_with_headers(self.names.subject(key), h, m.payload.clone()).await {
                Ok(ack) => acks.push((i, ack.into_future())),
                Err(e) => report.refuse(i, publish_error(&self.names.stream, e)),
            }
        }
        if acks.is_empty() {
            return Ok(report);
        }
        self.s.calls.count("PUBLISH.ACKS");
        let (index, waits): (Vec<usize>, Vec<_>) = acks.into_iter().unzip();
        for (i, r) in index.into_iter().zip(futures_util::future::join_all(waits).await) {
            if let Err(e) = r {
                report.refuse(i, publish_error(&self.names.stream, e));
            }
        }
        Ok(report)
    }
}
