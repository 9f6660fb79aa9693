//! The portable publisher: payload encoding, checks against the backend's limits, batching of concurrent publishes
//! (where the backend asks for it through [`Capabilities::publish_linger`]) and retries with one jittered budget per
//! message. Drivers make one call per batch and never retry; this layer owns every retry, as Go CDK's portable send
//! batcher does.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::backend::time::jittered;
use crate::backend::{Capabilities, OutgoingMessage, TopicDriver};
use crate::error::{Error, ErrorKind, Result};
use crate::message::RESERVED_ATTRIBUTE_PREFIX;
use crate::metrics::{PublishMetrics, Started};
use crate::topic::TopicConfig;

/// Attempts per message whose publish fails retryably (one budget per message, whichever batch carries it).
pub(crate) const PUBLISH_ATTEMPTS: u32 = 4;
/// Backoff before the second attempt; doubles per attempt, jittered.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

type Reply = oneshot::Sender<Result<()>>;

/// Publishes to one topic through its driver.
pub(crate) struct Publisher {
    parts: Arc<Parts>,
    /// Where the backend coalesces concurrent publishes: the batcher task's queue.
    batcher: Option<mpsc::UnboundedSender<(OutgoingMessage, Reply)>>,
}

impl Publisher {
    /// A publisher of topic `name` on backend `backend`; spawns its batcher when the backend asks for one (ordered
    /// topics send one batch at a time, to keep publish order).
    pub(crate) fn new(
        backend: &str,
        name: &str,
        config: TopicConfig,
        driver: Arc<dyn TopicDriver>,
        caps: &Capabilities,
    ) -> Self {
        let parts = Arc::new(Parts {
            metrics: PublishMetrics::new(backend, name),
            name: name.into(),
            driver,
            max_batch: caps.max_publish_batch.max(1),
            max_bytes: caps.max_publish_bytes,
            atomic: caps.atomic_publish,
            overhead: caps.publish_overhead,
        });
        let batcher = (!caps.publish_linger.is_zero()).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let in_flight = if config.ordered { 1 } else { caps.publish_in_flight.max(1) };
            tokio::spawn(batcher(parts.clone(), caps.publish_linger, in_flight, rx));
            tx
        });
        Publisher { parts, batcher }
    }

    /// Publishes one message at once, without waiting, where the driver can ([`TopicDriver::publish_now`]): its final
    /// outcome, or `None` when [`Publisher::publish_one`] must follow (the message is left as it was).
    pub(crate) fn publish_one_now(&self, m: &mut OutgoingMessage) -> Option<Result<()>> {
        let p = &self.parts;
        let started = p.metrics.start();
        let outcome = publish_now(p.driver.as_ref(), &p.name, std::slice::from_mut(m))?;
        p.metrics.sent(1, outcome.is_ok(), started);
        Some(outcome)
    }

    /// Publishes one message (the most common call there is: no batch vector unless the batcher takes it).
    pub(crate) async fn publish_one(&self, mut m: OutgoingMessage) -> Result<()> {
        if let Some(outcome) = self.publish_one_now(&mut m) {
            return outcome;
        }
        let p = &self.parts;
        let started = p.metrics.start();
        let outcome = match &self.batcher {
            Some(tx) => {
                let (reply, rx) = oneshot::channel();
                tx.send((m, reply)).map_err(|_| stopped())?;
                rx.await.map_err(|_| stopped()).and_then(|r| r)
            }
            None => first_error(send(p.driver.as_ref(), &p.name, std::slice::from_mut(&mut m)).await),
        };
        p.metrics.sent(1, outcome.is_ok(), started);
        outcome
    }

    /// Cancels a scheduled message through the driver ([`TopicDriver::cancel`]).
    pub(crate) async fn cancel(&self, id: &crate::MessageId) -> Result<bool> {
        self.parts.driver.cancel(id).await
    }

    /// Publishes a batch in chunks the backend takes (the whole batch in one call where the backend takes any batch
    /// all or nothing, [`Capabilities::atomic_publish`]); `Ok` once every message was accepted, otherwise the first
    /// message's error (the others may or may not have been accepted, unless the batch was one atomic call).
    pub(crate) async fn publish_many(&self, batch: &mut [OutgoingMessage]) -> Result<()> {
        let p = &self.parts;
        let mut start = 0;
        while start < batch.len() {
            let end = if p.atomic { batch.len() } else { start + p.chunk_len(&batch[start..]) };
            let chunk = &mut batch[start..end];
            let started = p.metrics.start();
            match publish_now(p.driver.as_ref(), &p.name, chunk) {
                Some(outcome) => {
                    p.metrics.sent(chunk.len(), outcome.is_ok(), started);
                    outcome?
                }
                None => {
                    let results = send(p.driver.as_ref(), &p.name, chunk).await;
                    let ok = results.iter().filter(|r| r.is_ok()).count();
                    p.metrics.sent(ok, true, started);
                    p.metrics.sent(results.len() - ok, false, Started::NONE);
                    first_error(results)?
                }
            }
            start = end;
        }
        Ok(())
    }
}

/// What the batcher needs of its publisher.
struct Parts {
    name: Arc<str>,
    metrics: PublishMetrics,
    driver: Arc<dyn TopicDriver>,
    max_batch: usize,
    max_bytes: usize,
    /// A batch goes whole, in one call ([`Capabilities::atomic_publish`]).
    atomic: bool,
    overhead: usize,
}

impl Parts {
    fn size(&self, m: &OutgoingMessage) -> usize {
        wire_size(m) + self.overhead
    }

    /// How many of `msgs` (at least one) fit one publish call.
    fn chunk_len(&self, msgs: &[OutgoingMessage]) -> usize {
        let mut bytes = 0;
        for (i, m) in msgs.iter().enumerate().take(self.max_batch) {
            bytes += self.size(m);
            if i > 0 && bytes > self.max_bytes {
                return i;
            }
        }
        msgs.len().min(self.max_batch)
    }
}

/// Payload, attribute and ordering-key bytes: what backends count against their size limits.
pub(crate) fn wire_size(m: &OutgoingMessage) -> usize {
    m.payload.len()
        + m.attributes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + m.ordering_key.as_ref().map_or(0, |k| k.len())
}

fn stopped() -> Error {
    Error::new(ErrorKind::Shutdown, "the topic's publisher has stopped")
}

/// Coalesces concurrent publishes over `linger` into calls of at most `max_batch` messages and `max_bytes`, with at
/// most `in_flight` calls at once.
async fn batcher(
    p: Arc<Parts>,
    linger: Duration,
    in_flight: usize,
    mut rx: mpsc::UnboundedReceiver<(OutgoingMessage, Reply)>,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    let dispatch = |batch: Vec<(OutgoingMessage, Reply)>| {
        let (p, slots) = (p.clone(), slots.clone());
        async move {
            let permit = slots.acquire_owned().await.expect("never closed");
            tokio::spawn(async move {
                let (mut msgs, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let results = send(p.driver.as_ref(), &p.name, &mut msgs).await;
                drop(permit);
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            });
        }
    };
    while let Some(first) = rx.recv().await {
        let mut size = p.size(&first.0);
        let mut batch = vec![first];
        // One timer per batch, polled only once the queue runs dry: messages already waiting are taken at once.
        let linger_ends = tokio::time::sleep(linger);
        tokio::pin!(linger_ends);
        while batch.len() < p.max_batch {
            let next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    m = rx.recv() => m,
                    _ = &mut linger_ends => None,
                },
            };
            let Some(next) = next else { break };
            let n = p.size(&next.0);
            if size + n > p.max_bytes {
                dispatch(std::mem::take(&mut batch)).await;
                size = 0;
            }
            size += n;
            batch.push(next);
        }
        dispatch(batch).await;
    }
}

/// The driver's immediate publish: its final outcome, or `None` when the async path (with retries) must follow (not
/// supported, or failed retryably).
fn publish_now(driver: &dyn TopicDriver, topic: &str, chunk: &mut [OutgoingMessage]) -> Option<Result<()>> {
    match driver.publish_now(chunk)? {
        Ok(()) => Some(Ok(())),
        Err(e) if e.is_retryable() => None,
        Err(e) => {
            tracing::error!(topic, error = %e, "publish failed");
            Some(Err(e))
        }
    }
}

fn first_error(results: Vec<Result<()>>) -> Result<()> {
    results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
}

/// Sends `batch` with one driver call, then retries exactly the messages that failed retryably (a whole failed call
/// counts for each of its messages), with jittered exponential backoff, up to [`PUBLISH_ATTEMPTS`] per message.
/// Returns each message's outcome, in batch order.
pub(crate) async fn send(driver: &dyn TopicDriver, topic: &str, batch: &mut [OutgoingMessage]) -> Vec<Result<()>> {
    let mut results: Vec<Option<Result<()>>> = (0..batch.len()).map(|_| None).collect();
    // Indexes into `batch` of the messages the next call carries; the first call sends the batch as it is.
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    let mut attempt = 1;
    while !pending.is_empty() {
        let retry_copy: Vec<OutgoingMessage>;
        let carried: &[OutgoingMessage] = if attempt == 1 {
            batch
        } else {
            retry_copy = pending.iter().map(|&i| batch[i].clone()).collect();
            &retry_copy
        };
        // Each carried message's outcome of this call: `None` accepted, `Some` refused.
        let outcomes: Vec<Option<Error>> = match driver.publish(carried).await {
            Ok(report) => {
                let mut outcomes: Vec<Option<Error>> = (0..pending.len()).map(|_| None).collect();
                for (k, e) in report.into_failures() {
                    if let Some(slot) = outcomes.get_mut(k) {
                        *slot = Some(e);
                    }
                }
                outcomes
            }
            Err(e) => pending.iter().map(|_| Some(e.duplicate())).collect(),
        };
        let mut again = Vec::new();
        for (&i, outcome) in pending.iter().zip(outcomes) {
            match outcome {
                None => results[i] = Some(Ok(())),
                Some(e) if e.is_retryable() && attempt < PUBLISH_ATTEMPTS => {
                    tracing::warn!(topic, id = %batch[i].id, attempt, error = %e, "publish failed, retrying");
                    again.push(i);
                }
                Some(e) => {
                    tracing::error!(topic, id = %batch[i].id, attempt, error = %e,
                        "publish failed; the message may or may not have been delivered");
                    results[i] = Some(Err(e));
                }
            }
        }
        pending = again;
        if !pending.is_empty() {
            tokio::time::sleep(jittered(FIRST_BACKOFF * 2u32.pow(attempt - 1))).await;
            attempt += 1;
        }
    }
    results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
}

/// Checks a prepared message against the topic and the backend's limits; errors name the value and the rule.
pub(crate) fn validate(
    caps: &Capabilities,
    backend: &str,
    name: &str,
    config: TopicConfig,
    m: &OutgoingMessage,
) -> Result<()> {
    if m.attributes.len() > caps.max_attributes {
        return Err(Error::invalid(format!(
            "message on topic {name:?} has {} attributes; the {backend} backend allows at most {}",
            m.attributes.len(),
            caps.max_attributes
        )));
    }
    for key in m.attributes.keys() {
        if key.is_empty() {
            return Err(Error::invalid(format!("message on topic {name:?} has an attribute with an empty name")));
        }
        if key.starts_with(RESERVED_ATTRIBUTE_PREFIX) {
            return Err(Error::invalid(format!(
                "attribute name {key:?} on topic {name:?} is reserved: names starting with \
                 {RESERVED_ATTRIBUTE_PREFIX:?} are tidings' own"
            )));
        }
    }
    match (&m.ordering_key, config.ordered) {
        (Some(k), false) => {
            return Err(Error::invalid(format!(
                "ordering key {k:?} given for topic {name:?}, which is not ordered; declare it with \
                 TopicConfig::ordered() or drop the key"
            )))
        }
        (Some(k), true) if k.is_empty() => {
            return Err(Error::invalid(format!("empty ordering key on ordered topic {name:?}")))
        }
        _ => {}
    }
    let size = wire_size(m);
    if size > caps.max_message_size {
        return Err(Error::new(
            ErrorKind::MessageTooLarge,
            format!(
                "message on topic {name:?} is {size} bytes (payload and attributes); the {backend} backend's limit is \
                 {} bytes",
                caps.max_message_size
            ),
        ));
    }
    Ok(())
}

/// JSON-encodes a payload.
///
/// Small payloads (the common case) are cut from a per-thread chunk: one allocation serves many messages, a copy for
/// a second subscriber is a reference count, and freeing the last message of a chunk frees it all at once. A payload
/// that outlives its neighbours keeps its chunk alive, so the in-memory bus copies the payloads it parks for long (its
/// dead-letter queue) out of their chunks. Larger payloads get an allocation of their own, of exactly their size.
pub(crate) fn encode<T: Serialize>(message: &T) -> Result<Bytes> {
    /// Bytes of a chunk.
    const CHUNK: usize = 8 * 1024;
    /// Payloads above this size get their own allocation.
    const OWN: usize = 1024;
    thread_local! {
        static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }
    SCRATCH.with(|scratch| {
        // A `Serialize` impl that publishes from inside itself finds the chunk taken and gets a fresh buffer.
        let Ok(mut buf) = scratch.try_borrow_mut() else {
            return Ok(Bytes::copy_from_slice(&serde_json::to_vec(message)?));
        };
        if buf.capacity() < OWN {
            *buf = BytesMut::with_capacity(CHUNK);
        }
        // Empty unless a `Serialize` impl panicked half-way through the previous message.
        buf.clear();
        if let Err(e) = serde_json::to_writer((&mut *buf).writer(), message) {
            buf.clear();
            return Err(e.into());
        }
        if buf.len() <= OWN {
            return Ok(buf.split().freeze());
        }
        let own = Bytes::copy_from_slice(&buf);
        buf.clear();
        if buf.capacity() > 2 * CHUNK {
            // A large payload grew the buffer: do not keep that much for the small ones.
            *buf = BytesMut::new();
        }
        Ok(own)
    })
}

#[cfg(test)]
mod tests;
