//! Receiving and settling: long-poll `ReceiveMessage` (at most 10, never more than the free handler slots),
//! `ApproximateReceiveCount` as the attempt, `DeleteMessageBatch` to ack, `ChangeMessageVisibilityBatch` to nack
//! with a delay and to extend leases, and an explicit copy to the dead-letter queue (SQS redrive is the backstop).
//!
//! A `ReceiveMessage` long poll is never cut: SQS hands messages to a poll whose connection was closed, and they would
//! stay invisible for the whole ack deadline. A receive runs in its caller's task (a task and a channel per receive
//! cost more CPU than decoding the batch); when its caller drops it mid-poll (the runtime stopped while it waited),
//! the poll moves to a task of its own, which releases what it gets (visibility 0), and `close` waits for such polls.
//! The runtime waits for `close` only until the shutdown's timeout plus a second (within `Bus::SHUTDOWN_MARGIN`): a
//! poll still open then goes on in the background while the process runs; if the process exits first, what SQS hands
//! that poll returns after its visibility timeout, its receive counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue,
    MessageSystemAttributeName as Sys, QueueAttributeName as Q,
};
use bytes::Bytes;
use tidings_core::backend::{AckId, DeadLetterRequest, DeadLetters, ReceivedMessage, SubscriptionDriver};
use tidings_core::{Attributes, Error, MessageId, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{entry, sdk};
use crate::meta::{from_micros, micros, split, Meta, META_ATTRIBUTE};
use crate::provision::{queue_attributes, SubRes};
use crate::Shared;

/// Longest dead-letter reason kept.
const MAX_REASON: usize = 1024;

/// Most entries per `DeleteMessageBatch` and `ChangeMessageVisibilityBatch`: the backend's `max_settle_batch`, so
/// each settle call of the driver is one SQS call (core splits larger settlements).
pub(crate) const MAX_BATCH: usize = 10;

/// Receives one subscription may have in flight (each holds a permit; `close` takes them all).
const MAX_RECEIVES: u32 = 1024;

/// One subscription's queues.
#[derive(Debug, Clone)]
pub struct AwsSubscription {
    s: Arc<Shared>,
    pub(crate) res: SubRes,
    ordered: bool,
    /// One permit per receive in flight (or releasing what its gone caller did not take).
    receiving: Arc<Semaphore>,
}

type Receiving = Pin<Box<dyn Future<Output = Result<Vec<ReceivedMessage>>> + Send>>;

/// A receive in flight, polled by its caller. Dropped before its poll ended, it finishes the poll in a task of its own
/// and releases what it gets.
struct InFlight {
    poll: Option<Receiving>,
    sub: AwsSubscription,
    /// The caller's call-count scope (the poll runs within it), for the release.
    scope: tidings_core::backend::calls::Scope,
    /// Held until the poll ends, wherever it ends (`close` waits for it).
    permit: Option<OwnedSemaphorePermit>,
}

impl Future for InFlight {
    type Output = Result<Vec<ReceivedMessage>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let poll = self.poll.as_mut().expect("polled after it returned");
        let got = ready!(poll.as_mut().poll(cx));
        self.poll = None;
        self.permit = None;
        Poll::Ready(got)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(poll) = self.poll.take() else { return };
        // Without a runtime the poll cannot go on; it is cut (and its messages return after the ack deadline).
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (sub, permit) = (self.sub.clone(), self.permit.take());
        rt.spawn(tidings_core::backend::calls::scoped(self.scope.clone(), async move {
            if let Ok(orphaned) = poll.await {
                if !orphaned.is_empty() {
                    sub.release(orphaned).await;
                }
            }
            drop(permit);
        }));
    }
}

/// A message read from a queue, in tidings terms.
pub(crate) struct Read {
    pub(crate) msg: ReceivedMessage,
    /// Its tidings metadata, if it has any; the trace context is in `msg`.
    pub(crate) meta: Option<Meta>,
}

fn secs(d: Duration) -> i32 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).min(43_200) as i32
}

pub(crate) fn handle(id: &AckId) -> &str {
    match id {
        AckId::Text(h) => h,
        AckId::Num(_) => "",
    }
}

impl AwsSubscription {
    pub(crate) fn new(s: Arc<Shared>, res: SubRes, ordered: bool) -> Self {
        Self { s, res, ordered, receiving: Arc::new(Semaphore::new(MAX_RECEIVES as usize)) }
    }

    /// Makes messages nobody will handle visible again at once.
    async fn release(&self, msgs: Vec<ReceivedMessage>) {
        tracing::debug!(queue = %self.res.queue_url, count = msgs.len(), "releasing messages received after the caller left");
        let items = msgs.into_iter().map(|m| (m.ack_id, 0)).collect();
        if let Err(e) = self.change_visibility(&self.res.queue_url, items, "release").await {
            tracing::warn!(error = %e, "releasing received messages failed; they return after their ack deadline");
        }
    }

    pub(crate) async fn read(
        &self,
        url: &str,
        max: usize,
        wait: Duration,
        visibility: Option<i32>,
    ) -> Result<Vec<Read>> {
        self.s.calls.count("sqs:ReceiveMessage");
        let mut req = self
            .s
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_attribute_names("All")
            .message_system_attribute_names(Sys::ApproximateReceiveCount)
            .message_system_attribute_names(Sys::SentTimestamp);
        if self.ordered {
            // Another producer's message on a FIFO queue has only its group for an ordering key; unordered
            // subscriptions have no use for it.
            req = req.message_system_attribute_names(Sys::MessageGroupId);
        }
        if let Some(v) = visibility {
            req = req.visibility_timeout(v);
        }
        let out = req.send().await.map_err(|e| sdk("ReceiveMessage", url, e))?;
        // The output is ours: its strings move into the messages rather than being copied.
        Ok(out.messages.unwrap_or_default().into_iter().map(|m| self.to_read(m)).collect())
    }

    /// One received SQS message in tidings terms.
    fn to_read(&self, m: aws_sdk_sqs::types::Message) -> Read {
        let mut sys = m.attributes.unwrap_or_default();
        let mut sys_take = |k: Sys| sys.remove(&k);
        let (mut meta, attributes) = split(m.message_attributes);
        let trace = meta.as_mut().and_then(|m| m.trace.take());
        let attempt = sys_take(Sys::ApproximateReceiveCount).and_then(|v| v.parse::<i64>().ok());
        let publish_time = match &meta {
            Some(meta) => from_micros(meta.ts),
            None => sys_take(Sys::SentTimestamp)
                .and_then(|v| v.parse::<i64>().ok())
                .map_or_else(SystemTime::now, |ms| from_micros(ms * 1000)),
        };
        let id = match &meta {
            Some(meta) => MessageId::from(meta.id.as_str()),
            None => MessageId::from(m.message_id.as_deref().unwrap_or_default()),
        };
        // tidings' own messages carry their key (a keyless one has its id as group); another producer's message has
        // only its MessageGroupId, which FIFO queues order by (requested only for ordered subscriptions).
        let key = match &meta {
            Some(meta) => meta.key.as_deref().map(Arc::<str>::from),
            None => sys_take(Sys::MessageGroupId).map(Arc::<str>::from),
        }
        .filter(|_| self.ordered);
        let ack_id = AckId::Text(m.receipt_handle.as_deref().unwrap_or_default().into());
        let payload = Bytes::from(m.body.unwrap_or_default());
        let attempt = attempt.unwrap_or(1).max(1) as u32;
        let msg = ReceivedMessage::new(ack_id, id, payload, publish_time, attempt)
            .with_attributes(attributes)
            .with_ordering_key(key)
            .with_trace(trace);
        Read { msg, meta }
    }

    /// One `ChangeMessageVisibilityBatch` of at most [`MAX_BATCH`] entries.
    async fn change_visibility_batch(&self, url: &str, items: &[(AckId, i32)], op: &str) -> Result<()> {
        let entries = items
            .iter()
            .enumerate()
            .map(|(i, (id, v))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle(id))
                    .visibility_timeout(*v)
                    .build()
                    .map_err(|e| Error::invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        self.s.calls.count("sqs:ChangeMessageVisibilityBatch");
        let out = self
            .s
            .sqs
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk(op, url, e))?;
        for f in out.failed() {
            // A stale receipt handle (the message was redelivered or is gone) is not an error of this call.
            tracing::debug!(queue = url, code = f.code(), "{op}: entry failed");
        }
        Ok(())
    }

    /// One `DeleteMessageBatch` of at most [`MAX_BATCH`] receipt handles.
    async fn delete_batch(&self, url: &str, handles: &[&str]) -> Result<()> {
        let entries = handles
            .iter()
            .enumerate()
            .map(|(i, h)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*h)
                    .build()
                    .map_err(|e| Error::invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        self.s.calls.count("sqs:DeleteMessageBatch");
        let out = self
            .s
            .sqs
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk("DeleteMessageBatch", url, e))?;
        if let Some(f) = out.failed().iter().find(|f| !f.code().contains("ReceiptHandleIsInvalid")) {
            return Err(entry("DeleteMessageBatch", url, f.code(), f.message(), f.sender_fault()));
        }
        Ok(())
    }

    /// Visibility changes of any number, in calls of [`MAX_BATCH`]: for the dead-letter queue's surface, whose calls
    /// core does not split (its settle calls it does).
    pub(crate) async fn change_visibility(&self, url: &str, items: Vec<(AckId, i32)>, op: &str) -> Result<()> {
        for chunk in items.chunks(MAX_BATCH) {
            self.change_visibility_batch(url, chunk, op).await?;
        }
        Ok(())
    }

    /// Deletes of any number, in calls of [`MAX_BATCH`]: for the dead-letter queue's surface (see `change_visibility`).
    pub(crate) async fn delete(&self, url: &str, handles: &[&str]) -> Result<()> {
        for chunk in handles.chunks(MAX_BATCH) {
            self.delete_batch(url, chunk).await?;
        }
        Ok(())
    }

    /// Sends a copy of a message to `url` (the DLQ, or the subscription queue on redrive).
    pub(crate) async fn send_copy(
        &self,
        url: &str,
        body: &[u8],
        attributes: &Attributes,
        meta: &Meta,
        dedup: &str,
    ) -> Result<()> {
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| Error::invalid(e.to_string()))
        };
        let body = String::from_utf8_lossy(body);
        let bytes = body.len();
        let mut req = self.s.sqs.send_message().queue_url(url).message_body(body);
        req = req.message_attributes(META_ATTRIBUTE, attr(&meta.encode())?);
        for (k, v) in attributes {
            req = req.message_attributes(k, attr(v)?);
        }
        if self.res.fifo {
            req = req
                .message_group_id(meta.key.clone().unwrap_or_else(|| meta.id.clone()))
                .message_deduplication_id(dedup);
        }
        self.s.calls.count_bytes("sqs:SendMessage", bytes);
        req.send().await.map_err(|e| sdk("SendMessage", url, e))?;
        Ok(())
    }
}

#[async_trait]
impl SubscriptionDriver for AwsSubscription {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let wait = wait.min(self.s.config.wait_time);
        let permit = self.receiving.clone().acquire_owned().await.expect("the semaphore is never closed");
        let sub = self.clone();
        // The call-count scope of the caller's task, for the poll wherever it ends (see `InFlight`).
        let scope = tidings_core::backend::calls::Scope::current();
        let poll = Box::pin(tidings_core::backend::calls::scoped(scope.clone(), async move {
            let got = sub.read(&sub.res.queue_url, max, wait, None).await;
            got.map(|v| v.into_iter().map(|r| r.msg).collect::<Vec<_>>())
        }));
        InFlight { poll: Some(poll), sub: self.clone(), scope, permit: Some(permit) }.await
    }

    async fn close(&self) -> Result<()> {
        // Polls still open release what they get; wait for them, so nothing is left invisible if the process exits.
        let _all = self.receiving.acquire_many(MAX_RECEIVES).await.expect("the semaphore is never closed");
        Ok(())
    }

    async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
        let handles: Vec<&str> = ids.iter().map(handle).collect();
        self.delete_batch(&self.res.queue_url, &handles).await
    }

    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()> {
        let items: Vec<_> = items.into_iter().map(|(id, d)| (id, secs(d))).collect();
        self.change_visibility_batch(&self.res.queue_url, &items, "nack").await
    }

    async fn extend_lease(&self, ids: Vec<AckId>, by: Duration) -> Result<()> {
        let v = secs(by);
        let items: Vec<_> = ids.into_iter().map(|id| (id, v)).collect();
        self.change_visibility_batch(&self.res.queue_url, &items, "extend lease").await
    }

    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()> {
        let mut done = Vec::new();
        for r in &items {
            let m = &r.message;
            let mut reason = r.reason.clone();
            if reason.len() > MAX_REASON {
                let mut cut = MAX_REASON;
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                reason.truncate(cut);
            }
            let meta = Meta {
                id: m.id.to_string(),
                ts: micros(m.publish_time),
                key: m.ordering_key.as_deref().map(str::to_string),
                reason: Some(reason),
                attempts: Some(m.attempt),
                dlq_ts: Some(micros(SystemTime::now())),
                target: None,
                trace: m.trace.clone(),
            };
            let dedup = format!("{}-dlq-{}", m.id, m.attempt);
            // A foreign producer may have sent more attributes than SQS lets a copy carry: keep what fits, say so.
            let mut attributes = m.attributes.clone();
            let mut meta = meta;
            if attributes.len() > crate::meta::MAX_USER_ATTRIBUTES {
                let dropped: Vec<String> = attributes.keys().skip(crate::meta::MAX_USER_ATTRIBUTES).cloned().collect();
                for k in &dropped {
                    attributes.remove(k);
                }
                if let Some(r) = meta.reason.as_mut() {
                    r.push_str(&format!(
                        " ({} attributes not kept, SQS allows 10: {})",
                        dropped.len(),
                        dropped.join(", ")
                    ));
                }
            }
            self.send_copy(&self.res.dlq_url, &m.payload, &attributes, &meta, &dedup).await?;
            done.push(handle(&m.ack_id));
        }
        self.delete_batch(&self.res.queue_url, &done).await
    }

    /// Delayed delivery at its due time: each copy is sent straight to this subscription's queue (not through SNS,
    /// so no other subscription gets it) with a fresh FIFO deduplication id, as a dead-letter restore sends its copies;
    /// the deliveries whose copies went are then deleted.
    async fn requeue(&self, messages: Vec<ReceivedMessage>) -> Result<()> {
        let mut sent = Vec::with_capacity(messages.len());
        let mut failed = None;
        for m in &messages {
            let meta = Meta {
                id: m.id.to_string(),
                ts: micros(m.publish_time),
                key: m.ordering_key.as_deref().map(str::to_string),
                trace: m.trace.clone(),
                ..Default::default()
            };
            let dedup = format!("{}-due-{}", m.id, uuid::Uuid::now_v7().simple());
            if let Err(e) = self.send_copy(&self.res.queue_url, &m.payload, &m.attributes, &meta, &dedup).await {
                failed = Some(e);
                break;
            }
            sent.push(handle(&m.ack_id));
        }
        let deleted = self.delete_batch(&self.res.queue_url, &sent).await;
        match failed {
            Some(e) => Err(e),
            None => deleted,
        }
    }

    fn dead_letter_queue(self: Arc<Self>) -> Option<Arc<dyn DeadLetters>> {
        Some(self)
    }

    async fn backlog(&self) -> Result<Option<u64>> {
        let a = queue_attributes(&self.s, &self.res.queue_url).await?;
        let n = |k: Q| a.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(Some(
            n(Q::ApproximateNumberOfMessages)
                + n(Q::ApproximateNumberOfMessagesNotVisible)
                + n(Q::ApproximateNumberOfMessagesDelayed),
        ))
    }
}
