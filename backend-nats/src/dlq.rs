//! The dead-letter stream of a subscription: dead-lettering publishes a copy (with the reason, the attempts and the
//! time in tidings' metadata) and then terminates the delivery (`+TERM`); reading walks the stream by sequence;
//! redrive publishes a copy back to the topic addressed to this subscription alone and deletes the dead letter.

use std::time::SystemTime;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use tidings_core::backend::DeadLetterRequest;
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

/// A stored dead letter and its sequence in the dead-letter stream.
pub struct Stored {
    pub seq: u64,
    pub letter: DeadLetter,
    pub meta: Meta,
}

fn stored(m: StreamMessage) -> Stored {
    let (meta, msg_id, attributes) = split(Some(&m.headers));
    let meta = meta.unwrap_or_default();
    let id = if meta.id.is_empty() { msg_id.unwrap_or_else(|| format!("dlq-{}", m.sequence)) } else { meta.id.clone() };
    let stored_at: SystemTime = m.time.into();
    let published = if meta.ts > 0 { from_micros(meta.ts) } else { stored_at };
    let reason = meta.reason.clone().unwrap_or_else(|| "no reason recorded".into());
    let at = meta.dlq_ts.map_or(stored_at, from_micros);
    let letter = DeadLetter::new(MessageId::from(id), m.payload, published, meta.attempts.unwrap_or(0), reason, at)
        .with_attributes(attributes)
        .with_ordering_key(meta.key.clone());
    Stored { seq: m.sequence, letter, meta }
}

/// Up to `max` dead letters in stream order.
pub async fn read(s: &Shared, names: &SubNames, max: usize) -> Result<Vec<Stored>> {
    let stream = open(s, names).await?;
    let subject = names.dlq_subject();
    let (mut out, mut next) = (Vec::new(), 1u64);
    while out.len() < max {
        s.calls.count("STREAM.MSG.GET");
        match stream.get_first_raw_message_by_subject(&subject, next).await {
            Ok(m) => {
                next = m.sequence + 1;
                out.push(stored(m));
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => break,
            Err(e) => return Err(js_err("STREAM.MSG.GET", &names.dlq_stream, e)),
        }
    }
    Ok(out)
}

/// The dead-letter stream of a subscription.
pub async fn open(s: &Shared, names: &SubNames) -> Result<async_nats::jetstream::stream::Stream<()>> {
    s.js.get_stream_no_info(&names.dlq_stream).await.map_err(|e| js_err("open", &names.dlq_stream, e))
}

/// Moves dead letters (all, or those with these ids) back to the topic for this subscription only.
pub async fn redrive(s: &Shared, names: &SubNames, ids: Option<&[MessageId]>) -> Result<usize> {
    let stream = open(s, names).await?;
    let mut moved = 0;
    let batch = read(s, names, usize::MAX).await?;
    for d in batch.into_iter().filter(|d| ids.is_none_or(|ids| ids.contains(&d.letter.id))) {
        move_back(s, names, &stream, &d).await?;
        moved += 1;
    }
    Ok(moved)
}

/// Publishes a copy of one dead letter to the topic, addressed to this subscription alone, then deletes the dead
/// letter: interrupted in between, the message is in both places, never in neither.
pub async fn move_back(
    s: &Shared,
    names: &SubNames,
    stream: &async_nats::jetstream::stream::Stream<()>,
    d: &Stored,
) -> Result<()> {
    let meta = Meta {
        id: d.letter.id.to_string(),
        ts: micros(d.letter.publish_time),
        key: d.meta.key.clone(),
        target: Some(names.consumer.clone()),
        ..Default::default()
    };
    // A fresh `Nats-Msg-Id`: the copy must not be taken for a duplicate of the original.
    let dedup = format!("{}-redrive-{}", d.letter.id, uuid::Uuid::now_v7().simple());
    let h = headers(&dedup, &meta, &d.letter.attributes);
    let subject = names.topic.subject(d.meta.key.as_deref());
    s.calls.count("PUBLISH.ACKS");
    let ack = s.js.publish_with_headers(subject, h, d.letter.payload.clone()).await;
    ack.map_err(|e| js_err("redrive publish", &names.topic.stream, e))?
        .await
        .map_err(|e| js_err("redrive publish", &names.topic.stream, e))?;
    delete(s, names, stream, d.seq).await
}

/// Deletes one dead letter by its sequence.
pub async fn delete(
    s: &Shared,
    names: &SubNames,
    stream: &async_nats::jetstream::stream::Stream<()>,
    seq: u64,
) -> Result<()> {
    s.calls.count("STREAM.MSG.DELETE");
    stream.delete_message(seq).await.map_err(|e| js_err("STREAM.MSG.DELETE", &names.dlq_stream, e))?;
    Ok(())
}
