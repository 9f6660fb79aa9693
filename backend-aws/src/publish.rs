//! Publishing: concurrent publishes coalesce over a short linger into `PublishBatch` calls of up to 10 entries
//! (and 256 KiB). The SDK returns `Ok` even when entries failed, so each entry's result is checked, and exactly the
//! failed entries are retried, with backoff, when their error is retryable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sns::operation::publish_batch::PublishBatchOutput;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use tidings_core::backend::{OutgoingMessage, TopicDriver};
use tidings_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

use crate::error::{entry, sdk};
use crate::meta::{micros, Meta, META_ATTRIBUTE};
use crate::provision::TopicRes;
use crate::Shared;

/// Entries per `PublishBatch`.
const MAX_ENTRIES: usize = 10;
/// Bytes per `PublishBatch` (all entries together).
const MAX_BATCH_BYTES: usize = 262_144;
/// Attempts for a failed entry whose error is retryable.
const ENTRY_ATTEMPTS: u32 = 4;
/// `PublishBatch` calls in flight at once on a standard topic (FIFO topics send one at a time, to keep order). At
/// AWS's tens of milliseconds a call, 4 in flight would cap a topic near a thousand messages a second per process;
/// Go CDK allows 100.
const IN_FLIGHT: usize = 64;

type Reply = oneshot::Sender<Result<()>>;

/// Publisher of one SNS topic.
#[derive(Debug)]
pub struct AwsTopic {
    tx: mpsc::UnboundedSender<(OutgoingMessage, Reply)>,
}

impl AwsTopic {
    pub fn start(shared: Arc<Shared>, topic: TopicRes, ordered: bool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batcher(shared, topic, ordered, rx));
        Self { tx }
    }
}

#[async_trait]
impl TopicDriver for AwsTopic {
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<()> {
        let mut replies = Vec::with_capacity(batch.len());
        for m in batch {
            let (tx, rx) = oneshot::channel();
            self.tx.send((m.clone(), tx)).map_err(|_| Error::backend("aws: publisher stopped", false))?;
            replies.push(rx);
        }
        for r in replies {
            r.await.map_err(|_| Error::backend("aws: publisher stopped", false))??;
        }
        Ok(())
    }
}

/// Approximate wire size of one entry: body plus attribute names and values.
fn entry_size(m: &OutgoingMessage) -> usize {
    m.payload.len() + m.attributes.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>() + 128
}

async fn batcher(
    s: Arc<Shared>,
    topic: TopicRes,
    ordered: bool,
    mut rx: mpsc::UnboundedReceiver<(OutgoingMessage, Reply)>,
) {
    let linger = s.config.publish_linger;
    let slots = Arc::new(tokio::sync::Semaphore::new(if topic.fifo { 1 } else { IN_FLIGHT }));
    let dispatch = |batch: Vec<(OutgoingMessage, Reply)>| {
        let (s, topic, slots) = (s.clone(), topic.clone(), slots.clone());
        async move {
            let permit = slots.acquire_owned().await.expect("never closed");
            tokio::spawn(async move {
                send(&s, &topic, ordered, batch).await;
                drop(permit);
            });
        }
    };
    while let Some(first) = rx.recv().await {
        let mut size = entry_size(&first.0);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < MAX_ENTRIES {
            let next = tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(next) = next else { break };
            let n = entry_size(&next.0);
            if size + n > MAX_BATCH_BYTES {
                dispatch(std::mem::take(&mut batch)).await;
                size = 0;
            }
            size += n;
            batch.push(next);
        }
        dispatch(batch).await;
    }
}

fn to_entry(i: usize, m: &OutgoingMessage, fifo: bool, ordered: bool) -> Result<PublishBatchRequestEntry> {
    let body = std::str::from_utf8(&m.payload)
        .map_err(|_| Error::invalid(format!("message {} is not UTF-8; SNS bodies must be text", m.id)))?;
    if body.is_empty() {
        // AWS rejects it; LocalStack accepts it and then never delivers it.
        return Err(Error::invalid(format!("message {} has an empty body; SNS requires at least 1 byte", m.id)));
    }
    let meta = Meta {
        id: m.id.to_string(),
        ts: micros(m.publish_time),
        key: if ordered { m.ordering_key.as_deref().map(str::to_string) } else { None },
        ..Default::default()
    };
    let attr = |v: &str| MessageAttributeValue::builder().data_type("String").string_value(v).build();
    let mut b = PublishBatchRequestEntry::builder().id(i.to_string()).message(body);
    b = b.message_attributes(META_ATTRIBUTE, attr(&meta.encode()).map_err(|e| Error::invalid(e.to_string()))?);
    for (k, v) in &m.attributes {
        b = b.message_attributes(k, attr(v).map_err(|e| Error::invalid(e.to_string()))?);
    }
    if fifo {
        let group = m.ordering_key.as_deref().filter(|_| ordered).map_or_else(|| m.id.to_string(), str::to_string);
        b = b.message_group_id(group).message_deduplication_id(m.id.to_string());
    }
    b.build().map_err(|e| Error::invalid(format!("aws: bad PublishBatch entry: {e}")))
}

async fn send(s: &Shared, topic: &TopicRes, ordered: bool, batch: Vec<(OutgoingMessage, Reply)>) {
    send_with(&topic.arn, topic.fifo, ordered, batch, |entries| async move {
        s.calls.count("sns:PublishBatch");
        let out =
            s.sns.publish_batch().topic_arn(&topic.arn).set_publish_batch_request_entries(Some(entries)).send().await;
        out.map_err(|e| sdk("PublishBatch", &topic.arn, e))
    })
    .await
}

/// Sends `batch` through `call` (one `PublishBatch`), retrying exactly the entries that failed retryably, and answers
/// every message's caller.
async fn send_with<F, Fut>(arn: &str, fifo: bool, ordered: bool, batch: Vec<(OutgoingMessage, Reply)>, mut call: F)
where
    F: FnMut(Vec<PublishBatchRequestEntry>) -> Fut,
    Fut: std::future::Future<Output = Result<PublishBatchOutput>>,
{
    let (messages, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let mut results: Vec<Option<Result<()>>> = (0..messages.len()).map(|_| None).collect();
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut attempt = 1;
    while !pending.is_empty() {
        let mut entries = Vec::with_capacity(pending.len());
        for &i in &pending {
            match to_entry(i, &messages[i], fifo, ordered) {
                Ok(e) => entries.push(e),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        pending.retain(|&i| results[i].is_none());
        if entries.is_empty() {
            break;
        }
        let mut retry = Vec::new();
        match call(entries).await {
            Ok(out) => {
                for ok in out.successful() {
                    if let Some(i) = ok.id().and_then(|id| id.parse::<usize>().ok()) {
                        results[i] = Some(Ok(()));
                    }
                }
                for f in out.failed() {
                    let Ok(i) = f.id().parse::<usize>() else { continue };
                    let e = entry("PublishBatch", arn, f.code(), f.message(), f.sender_fault());
                    if e.is_retryable() && attempt < ENTRY_ATTEMPTS {
                        tracing::warn!(topic = arn, id = %messages[i].id, code = f.code(), attempt, "publish entry failed; retrying it");
                        retry.push(i);
                    } else {
                        results[i] = Some(Err(e));
                    }
                }
            }
            Err(e) => {
                for &i in &pending {
                    results[i] = Some(Err(Error::backend(e.to_string(), e.is_retryable())));
                }
            }
        }
        pending = retry;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100) * 2u32.pow(attempt - 1)).await;
            attempt += 1;
        }
    }
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result.unwrap_or_else(|| Err(Error::backend("aws: PublishBatch returned no result", true))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sns::types::{BatchResultErrorEntry, PublishBatchResultEntry};
    use std::sync::Mutex;

    fn message(n: u8) -> OutgoingMessage {
        OutgoingMessage {
            id: tidings_core::MessageId::from(format!("m{n}")),
            payload: bytes::Bytes::from(format!("{{\"n\":{n}}}")),
            attributes: Default::default(),
            ordering_key: None,
            publish_time: std::time::SystemTime::now(),
        }
    }

    fn output(ok: &[&str], failed: &[(&str, &str, bool)]) -> PublishBatchOutput {
        let mut b = PublishBatchOutput::builder();
        for id in ok {
            b = b.successful(PublishBatchResultEntry::builder().id(*id).message_id("x").build());
        }
        for (id, code, sender) in failed {
            b = b.failed(BatchResultErrorEntry::builder().id(*id).code(*code).sender_fault(*sender).build().unwrap());
        }
        b.build()
    }

    /// Runs `send_with` over three messages with scripted per-call outputs; returns the entry ids of each call and
    /// each message's result.
    async fn run(script: Vec<PublishBatchOutput>) -> (Vec<Vec<String>>, Vec<Result<()>>) {
        let calls = Mutex::new(Vec::new());
        let script = Mutex::new(script.into_iter());
        let (mut batch, mut rx) = (Vec::new(), Vec::new());
        for n in 0..3 {
            let (tx, r) = oneshot::channel();
            batch.push((message(n), tx));
            rx.push(r);
        }
        send_with("arn:test", false, false, batch, |entries| {
            calls.lock().unwrap().push(entries.iter().map(|e| e.id().to_string()).collect::<Vec<_>>());
            let out = script.lock().unwrap().next().expect("no more scripted calls");
            async move { Ok(out) }
        })
        .await;
        let mut results = Vec::new();
        for r in rx {
            results.push(r.await.unwrap());
        }
        (calls.into_inner().unwrap(), results)
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_the_retryable_failed_entries_are_retried() {
        let (calls, results) =
            run(vec![output(&["0", "2"], &[("1", "InternalError", false)]), output(&["1"], &[])]).await;
        assert_eq!(calls, vec![vec!["0", "1", "2"], vec!["1"]], "only entry 1 is sent again");
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_fault_fails_only_its_own_message() {
        let (calls, results) = run(vec![output(&["0", "2"], &[("1", "InvalidParameter", true)])]).await;
        assert_eq!(calls.len(), 1, "not retried");
        assert!(results[0].is_ok() && results[2].is_ok());
        let e = results[1].as_ref().unwrap_err();
        assert!(!e.is_retryable() && e.to_string().contains("InvalidParameter"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_entry_gives_up_after_its_attempts() {
        let failing = || output(&["0", "2"], &[("1", "Throttling", false)]);
        let again = || output(&[], &[("1", "Throttling", false)]);
        let (calls, results) = run(vec![failing(), again(), again(), again()]).await;
        assert_eq!(calls.len(), ENTRY_ATTEMPTS as usize);
        assert!(results[1].as_ref().unwrap_err().is_retryable());
    }
}
