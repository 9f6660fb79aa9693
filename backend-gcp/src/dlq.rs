//! A subscription's dead-letter queue (the subscription `<sub>-dlq` on the topic `<sub>-dlq`), read and swept by
//! unary pulls over REST ([`crate::rest`]). This is the backend's one dead-letter path: the operator SPI
//! ([`crate::admin`], `tidings::admin::Operator`, the CLI and the dashboard) and a running subscription's
//! `Subscription::dead_letters` / `redrive` ([`crate::subscribe`]) both go through it.
//!
//! A read leases exactly what its pulls return and releases it (ack deadline 0) before it returns, so the next read,
//! a redrive or another process sees every dead letter at once. A streaming pull per read did not: on Google's stock
//! emulator every closed stream stays behind as a ghost consumer that takes later dead letters and keeps them leased
//! for its ack deadline (and then hands them to the next ghost), so reads came back short and a redrive right after a
//! read found nothing.
//!
//! A redrive publishes a copy to the topic (addressed to this subscription; the topic's other subscriptions ack and
//! skip it) and then acks the dead letter: an interruption leaves each message in the dead-letter subscription, back
//! in the subscription, or in both, never in neither.

use std::collections::HashSet;

use google_cloud_pubsub::client::Publisher;
use tidings_core::admin::{Pace, Select};
use tidings_core::backend::OutgoingMessage;
use tidings_core::{DeadLetter, Error, Result};

use crate::meta::{micros, trace_of, Meta};
use crate::provision::Paths;
use crate::publish::to_message;
use crate::received::{dead_letter_of, id_of, meta_of};
use crate::rest::Received;
use crate::Shared;

/// Empty pull answers in a row before a dead-letter subscription counts as drained (the API may answer empty although
/// messages exist; the emulator does not).
const PATIENCE: usize = 2;
/// Most dead letters one read holds (and so the most a count or a read sees).
const MAX_PULL: usize = 10_000;

/// One subscription's dead-letter queue.
pub(crate) struct DeadLetterQueue<'a> {
    pub s: &'a Shared,
    pub paths: &'a Paths,
    /// The subscription's name in tidings: redrive copies are addressed to it.
    pub name: &'a str,
    /// Whether the topic is ordered (redrive copies keep their ordering key).
    pub ordered: bool,
}

impl DeadLetterQueue<'_> {
    fn path(&self) -> &str {
        &self.paths.dlq_subscription
    }

    /// Every message of the dead-letter subscription (up to [`MAX_PULL`]), leased to this call: the caller acks or
    /// releases each.
    async fn pull(&self) -> Result<Vec<Received>> {
        self.s.calls.count("pubsub:Pull");
        self.s.rest()?.pull(self.path(), MAX_PULL, PATIENCE).await
    }

    /// Releases what a read leased, so the next read (or the dead-letter subscription's other readers) sees it now.
    async fn release(&self, leased: &[Received]) -> Result<()> {
        if leased.is_empty() {
            return Ok(());
        }
        self.s.calls.count("pubsub:ModifyAckDeadline");
        let ids: Vec<String> = leased.iter().map(|r| r.ack_id.clone()).collect();
        self.s.rest()?.release(self.path(), &ids).await
    }

    async fn ack(&self, r: &Received) -> Result<()> {
        self.s.calls.count("pubsub:Acknowledge");
        self.s.rest()?.acknowledge(self.path(), std::slice::from_ref(&r.ack_id)).await
    }

    /// How many distinct dead letters there are (up to [`MAX_PULL`] messages read).
    pub async fn count(&self) -> Result<u64> {
        let pulled = self.pull().await?;
        let mut ids: Vec<String> = pulled.iter().map(|r| id_of(&r.message, meta_of(&r.message).as_ref())).collect();
        self.release(&pulled).await?;
        ids.sort();
        ids.dedup();
        Ok(ids.len() as u64)
    }

    /// The `max` earliest dead-lettered messages, each once, without removing any.
    pub async fn read(&self, max: usize) -> Result<Vec<DeadLetter>> {
        let pulled = self.pull().await?;
        let mut out: Vec<DeadLetter> = Vec::new();
        let mut seen = HashSet::new();
        for r in &pulled {
            let d = dead_letter_of(&r.message);
            if seen.insert(d.id.clone()) {
                out.push(d);
            }
        }
        self.release(&pulled).await?;
        out.sort_by_key(|d| d.dead_lettered_at);
        out.truncate(max);
        Ok(out)
    }

    /// Reads the dead-letter subscription once: each selected message is redriven through `publisher` (the topic's;
    /// copy published first) or, without `redrive`, only acked, one at a time; the rest are released at the end.
    /// Returns how many distinct dead letters were handled.
    pub async fn sweep(&self, publisher: &Publisher, select: Select<'_>, pace: &Pace, redrive: bool) -> Result<u64> {
        let mut done = 0;
        let mut kept = Vec::new();
        let mut handled = HashSet::new();
        let mut result = Ok(());
        let mut pulled = self.pull().await?.into_iter();
        for r in pulled.by_ref() {
            let d = dead_letter_of(&r.message);
            if handled.contains(&d.id) {
                // A second copy of a message already moved: it goes too, uncounted.
                result = self.ack(&r).await;
                if result.is_err() {
                    break;
                }
                continue;
            }
            if !select(&d) {
                kept.push(r);
                continue;
            }
            if !pace.wait().await {
                kept.push(r);
                break;
            }
            if redrive {
                if let Err(e) = self.publish_copy(publisher, &r, &d).await {
                    kept.push(r);
                    result = Err(e);
                    break;
                }
            }
            if let Err(e) = self.ack(&r).await {
                // Redriven but still a dead letter (in both: at-least-once); it is released below.
                kept.push(r);
                result = Err(e);
                break;
            }
            handled.insert(d.id);
            pace.done();
            done += 1;
        }
        kept.extend(pulled);
        let released = self.release(&kept).await;
        result.and(released).map(|()| done)
    }

    /// Publishes the redrive copy of a dead letter to the topic, addressed to this subscription, attempts reset.
    async fn publish_copy(&self, publisher: &Publisher, r: &Received, d: &DeadLetter) -> Result<()> {
        let out = OutgoingMessage::new(
            d.id.clone(),
            d.payload.clone(),
            d.attributes.clone(),
            d.ordering_key.as_deref().map(Into::into),
            d.publish_time,
        );
        let meta = Meta {
            id: d.id.to_string(),
            ts: micros(d.publish_time),
            target: Some(self.name.to_string()),
            trace: trace_of(&r.message.attributes, meta_of(&r.message).as_ref()),
            ..Default::default()
        };
        self.s.calls.count_bytes("pubsub:Publish", d.payload.len());
        let google_trace = self.s.config.google_trace_attributes;
        publisher.publish(to_message(&out, meta, self.ordered, google_trace)).await.map(drop).map_err(|e| {
            Error::backend(
                format!("gcp: publishing the redrive copy of {} to {} failed: {e}", d.id, self.paths.topic),
                true,
            )
        })
    }
}
