//! The dead-letter stream of a subscription: dead-lettering publishes a copy (with the reason, the attempts and the
//! time in tidings' metadata) and then terminates the delivery (`+TERM`). The stream is the subscription's
//! [`DeadLetters`], which core's one sweep reads, restores and deletes for the `Subscription` handle and the operator
//! alike: a read walks the stream by sequence (the cursor is the last sequence read, a letter's handle its
//! sequence); a restore publishes a copy back to the topic, addressed to this subscription alone, then deletes the
//! dead letter; a delete deletes it by sequence. Reads lease nothing, so there is nothing to release.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{DeleteMessageError, DeleteMessageErrorKind, LastRawMessageErrorKind, Stream};
use async_nats::jetstream::ErrorCode;
use async_trait::async_trait;
use tidings_core::backend::{AckId, DeadLetterRequest, DeadLetters, HeldLetter, LetterPage};
use tidings_core::{DeadLetter, Error, MessageId, Result};

use crate::meta::{from_micros, headers, micros, split, Meta};
use crate::names::SubNames;
use crate::Shared;

/// Longest dead-letter reason kept.
const MAX_REASON: usize = 1024;

fn truncate(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

pub(crate) fn js_err(op: &str, stream: &str, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("nats: {op} on stream {stream} failed: {e}"), true)
}

/// Publishes the dead-letter copies; returns the ones stored (a failed one stays with its delivery, redelivered).
pub async fn copy(s: &Shared, names: &SubNames, items: &[DeadLetterRequest], seqs: &[u64]) -> Vec<Result<()>> {
    let mut acks = Vec::with_capacity(items.len());
    for (r, seq) in items.iter().zip(seqs) {
        let m = &r.message;
        let meta = Meta {
            id: m.id.to_string(),
            ts: micros(m.publish_time),
            key: m.ordering_key.as_deref().map(str::to_string),
            reason: Some(truncate(r.reason.clone())),
            attempts: Some(m.attempt),
            dlq_ts: Some(micros(SystemTime::now())),
            target: None,
            trace: m.trace.clone(),
        };
        // De-duplicated per delivery: dead-lettering the same delivery twice stores one copy.
        let h = headers(&format!("{}-dlq-{seq}-{}", m.id, m.attempt), &meta, &m.attributes);
        acks.push(s.js.publish_with_headers(names.dlq_subject(), h, m.payload.clone()).await);
    }
    s.calls.count("PUBLISH.ACKS");
    let waits = acks.into_iter().map(|a| async move {
        match a {
            Ok(f) => f.await.map(drop).map_err(|e| js_err("dead-letter publish", &names.dlq_stream, e)),
            Err(e) => Err(js_err("dead-letter publish", &names.dlq_stream, e)),
        }
    });
    futures_util::future::join_all(waits).await
}

/// A dead letter as the stream stores it, under its sequence, with the trace context its message carried.
fn held(m: StreamMessage) -> HeldLetter {
    let (meta, msg_id, attributes) = split(Some(&m.headers));
    let meta = meta.unwrap_or_default();
    let id = if meta.id.is_empty() { msg_id.unwrap_or_else(|| format!("dlq-{}", m.sequence)) } else { meta.id.clone() };
    let stored_at: SystemTime = m.time.into();
    let published = if meta.ts > 0 { from_micros(meta.ts) } else { stored_at };
    let reason = meta.reason.clone().unwrap_or_else(|| "no reason recorded".into());
    let at = meta.dlq_ts.map_or(stored_at, from_micros);
    let letter = DeadLetter::new(MessageId::from(id), m.payload, published, meta.attempts.unwrap_or(0), reason, at)
        .with_attributes(attributes)
        .with_ordering_key(meta.key);
    HeldLetter::new(AckId::Num(m.sequence), letter).with_trace(meta.trace)
}

/// The dead-letter stream of a subscription.
pub async fn open(s: &Shared, names: &SubNames) -> Result<Stream<()>> {
    s.js.get_stream_no_info(&names.dlq_stream).await.map_err(|e| js_err("open", &names.dlq_stream, e))
}

/// A subscription's dead-letter stream as the one dead-letter surface, for one pass.
#[derive(Debug)]
pub(crate) struct NatsDeadLetters {
    s: Arc<Shared>,
    names: SubNames,
    /// Sequences whose redrive copy was stored: a retried restore (core retries a step that failed) does not copy
    /// them again.
    copied: Mutex<HashSet<u64>>,
}

/// Whether a delete failed because the message is gone already (deleted by an earlier attempt, or by another pass).
fn gone(e: &DeleteMessageError) -> bool {
    match e.kind() {
        DeleteMessageErrorKind::JetStream(e) => {
            e.error_code() == ErrorCode::SEQUENCE_NOT_FOUND || e.to_string().starts_with("no message found")
        }
        _ => false,
    }
}

impl NatsDeadLetters {
    pub(crate) fn new(s: Arc<Shared>, names: SubNames) -> Self {
        Self { s, names, copied: Mutex::default() }
    }

    /// Deletes one dead letter; one that is gone already counts as deleted.
    async fn delete_seq(&self, stream: &Stream<()>, seq: u64) -> Result<()> {
        self.s.calls.count("STREAM.MSG.DELETE");
        match stream.delete_message(seq).await {
            Err(e) if !gone(&e) => Err(js_err("STREAM.MSG.DELETE", &self.names.dlq_stream, e)),
            _ => Ok(()),
        }
    }
}

fn seq_of(handle: &AckId) -> Option<u64> {
    match handle {
        AckId::Num(seq) => Some(*seq),
        AckId::Text(_) => None,
    }
}

#[async_trait]
impl DeadLetters for NatsDeadLetters {
    async fn read(&self, cursor: Option<&str>, max: usize) -> Result<LetterPage> {
        let after: u64 = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                Error::invalid(format!("nats: dead-letter cursor {c:?} is not a sequence of the dead-letter stream"))
            })?,
        };
        let (s, names) = (&self.s, &self.names);
        let stream = open(s, names).await?;
        let subject = names.dlq_subject();
        let (mut letters, mut next, mut more) = (Vec::new(), after + 1, true);
        while letters.len() < max {
            s.calls.count("STREAM.MSG.GET");
            match stream.get_first_raw_message_by_subject(&subject, next).await {
                Ok(m) => {
                    next = m.sequence + 1;
                    letters.push(held(m));
                }
                Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                    more = false;
                    break;
                }
                Err(e) => return Err(js_err("STREAM.MSG.GET", &names.dlq_stream, e)),
            }
        }
        let cursor = letters.last().and_then(|h| seq_of(&h.handle)).filter(|_| more).map(|seq| seq.to_string());
        Ok(LetterPage::new(letters, cursor))
    }

    /// Publishes a copy of each letter to the topic, addressed to this subscription alone (id, publish time,
    /// attributes, ordering key and trace context kept; attempts start again), then deletes the dead letters whose
    /// copy was stored: interrupted in between, a message is in both places, never in neither. Retried, it copies
    /// nothing twice.
    async fn restore(&self, letters: Vec<HeldLetter>) -> Result<()> {
        let (s, names) = (&self.s, &self.names);
        let stream = open(s, names).await?;
        let copied = self.copied.lock().unwrap().clone();
        let mut acks = Vec::with_capacity(letters.len());
        for h in &letters {
            let d = &h.letter;
            if copied.contains(&seq_of(&h.handle).unwrap_or_default()) {
                acks.push(None);
                continue;
            }
            let meta = Meta {
                id: d.id.to_string(),
                ts: micros(d.publish_time),
                key: d.ordering_key.clone(),
                target: Some(names.consumer.clone()),
                trace: h.trace.clone(),
                ..Default::default()
            };
            // A fresh `Nats-Msg-Id`: the copy must not be taken for a duplicate of the original.
            let dedup = format!("{}-redrive-{}", d.id, uuid::Uuid::now_v7().simple());
            let subject = names.topic.subject(d.ordering_key.as_deref());
            let headers = headers(&dedup, &meta, &d.attributes);
            acks.push(Some(s.js.publish_with_headers(subject, headers, d.payload.clone()).await));
        }
        s.calls.count("PUBLISH.ACKS");
        for (h, ack) in letters.iter().zip(acks) {
            let seq = seq_of(&h.handle).unwrap_or_default();
            if let Some(ack) = ack {
                let fail = |e| js_err("redrive publish", &names.topic.stream, e);
                ack.map_err(fail)?.await.map_err(fail)?;
                self.copied.lock().unwrap().insert(seq);
            }
            self.delete_seq(&stream, seq).await?;
        }
        Ok(())
    }

    async fn delete(&self, handles: Vec<AckId>) -> Result<()> {
        let stream = open(&self.s, &self.names).await?;
        for seq in handles.iter().filter_map(seq_of) {
            self.delete_seq(&stream, seq).await?;
        }
        Ok(())
    }
}
