//! A subscription's SQS dead-letter queue on the one dead-letter surface ([`DeadLetters`]), for the `Subscription`
//! handle and the operator alike (core's sweep selects, paces and moves):
//!
//! | surface | SQS |
//! |---|---|
//! | `read` | `ReceiveMessage` on the DLQ, each letter hidden for [`READ_VISIBILITY`] so that one pass sees it once |
//! | handle | the receipt handle |
//! | `restore` | `SendMessage` of a copy to the subscription queue, then `DeleteMessageBatch` of the dead letters |
//! | `delete` | `DeleteMessageBatch` |
//! | `release` | `ChangeMessageVisibilityBatch` to 0 |
//!
//! SQS keeps no order a read could go on from: a read leases what it hands out, so the next read returns other
//! letters. The cursor means nothing; a read hands one out while it finds letters.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tidings_core::backend::{AckId, DeadLetters, HeldLetter, LetterPage};
use tidings_core::{DeadLetter, Result};

use crate::meta::{from_micros, micros, Meta};
use crate::subscribe::{handle, AwsSubscription, Read};

/// How long a letter read stays hidden from other reads: long enough for a sweep to move a read's letters at a paced
/// rate (a pace slower than one a second reads one letter at a time).
const READ_VISIBILITY: i32 = 30;

/// The long poll of a read: with a short poll SQS asks only some of its servers and may answer nothing although
/// letters wait, which would end a sweep early; a long poll asks them all and returns as soon as it has letters.
const READ_WAIT: Duration = Duration::from_secs(1);

/// The cursor a read hands out while it finds letters (SQS reads go on by themselves).
const GO_ON: &str = "sqs";

impl Read {
    /// A message received from a dead-letter queue as a [`DeadLetter`].
    fn into_dead_letter(self) -> DeadLetter {
        let meta = self.meta.unwrap_or_default();
        let reason = meta.reason.unwrap_or_else(|| "moved by the SQS redrive policy".into());
        let at = meta.dlq_ts.map_or(SystemTime::now(), from_micros);
        let m = self.msg;
        DeadLetter::new(m.id, m.payload, m.publish_time, meta.attempts.unwrap_or(0), reason, at)
            .with_attributes(m.attributes)
            .with_ordering_key(meta.key)
    }

    /// A message received from a dead-letter queue as a letter held under its receipt handle.
    fn into_held(mut self) -> HeldLetter {
        let (handle, trace) = (self.msg.ack_id.clone(), self.msg.trace.take());
        HeldLetter::new(handle, self.into_dead_letter()).with_trace(trace)
    }
}

/// The metadata of a restored copy: the message's id, publish time, ordering key and trace context; no reason,
/// attempts or dead-letter time, so the subscription counts its attempts afresh.
fn restored_meta(h: &HeldLetter) -> Meta {
    Meta {
        id: h.letter.id.to_string(),
        ts: micros(h.letter.publish_time),
        key: h.letter.ordering_key.clone(),
        trace: h.trace.clone(),
        ..Default::default()
    }
}

/// The receipt handles of these letters.
fn receipts(ids: &[AckId]) -> Vec<&str> {
    ids.iter().map(handle).collect()
}

#[async_trait]
impl DeadLetters for AwsSubscription {
    async fn read(&self, _cursor: Option<&str>, max: usize) -> Result<LetterPage> {
        let got = AwsSubscription::read(self, &self.res.dlq_url, max, READ_WAIT, Some(READ_VISIBILITY)).await?;
        let next = (!got.is_empty()).then(|| GO_ON.to_string());
        Ok(LetterPage::new(got.into_iter().map(Read::into_held).collect(), next))
    }

    /// Each copy is sent first; the dead letters whose copies went are deleted, also when a later send failed.
    async fn restore(&self, letters: Vec<HeldLetter>) -> Result<()> {
        let mut sent = Vec::with_capacity(letters.len());
        let mut failed = None;
        for h in &letters {
            let d = &h.letter;
            // FIFO: a fresh deduplication id, so a letter redriven twice within 5 minutes is not dropped as a repeat.
            let dedup = format!("{}-redrive-{}", d.id, uuid::Uuid::now_v7().simple());
            let meta = restored_meta(h);
            if let Err(e) = self.send_copy(&self.res.queue_url, &d.payload, &d.attributes, &meta, &dedup).await {
                failed = Some(e);
                break;
            }
            sent.push(handle(&h.handle));
        }
        let deleted = self.delete(&self.res.dlq_url, &sent).await;
        match failed {
            Some(e) => Err(e),
            None => deleted,
        }
    }

    async fn delete(&self, handles: Vec<AckId>) -> Result<()> {
        AwsSubscription::delete(self, &self.res.dlq_url, &receipts(&handles)).await
    }

    async fn release(&self, handles: Vec<AckId>) -> Result<()> {
        let items = handles.into_iter().map(|h| (h, 0)).collect();
        self.change_visibility(&self.res.dlq_url, items, "dead-letter release").await
    }
}
