//! Receiving: a pull without waiting for what is there (one round trip under load), else a waiting pull for one
//! message followed by one without waiting for the rest (a waiting pull for N would be held until N arrived).
//! Attempt = the delivery count of the reply subject. Deliveries addressed to another subscription (redrive copies)
//! or older than this subscription's retention are acked and skipped. JetStream hands out a key's messages in stream
//! order but not one at a time, so the backend declares no native ordering and core's runtime keeps one message per
//! key out on ordered topics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tidings_core::backend::{
    AckId, DeadLetterRequest, DeadLetters, ReceivedMessage, SubscriptionDriver, SubscriptionSpec,
};
use tidings_core::{MessageId, Result};

use crate::dlq::NatsDeadLetters;
use crate::floor::Floor;
use crate::meta::{delivery, from_micros, split};
use crate::names::SubNames;
use crate::pull::{pull, Inbox};
use crate::settle::{ack_sync, nak, reply, send};
use crate::{dlq, provision, Shared};

/// How long past its expiry a pull may still bring messages (the server's answer in flight).
const RELEASE_MARGIN: Duration = Duration::from_millis(500);

/// One subscription's consumer and dead-letter stream.
#[derive(Debug)]
pub struct NatsSubscription {
    s: Arc<Shared>,
    names: SubNames,
    exactly_once: bool,
    retention: Duration,
    /// Ordered topic: deliveries carry their ordering key.
    ordered: bool,
    /// The attempts reported for this consumer's unsettled deliveries (shared with its other drivers).
    floor: Arc<Floor>,
    /// The last receive found the consumer drained: the next one starts with a waiting pull.
    dry: AtomicBool,
    /// The reply subject of this driver's pulls, made on the first receive.
    inbox: tokio::sync::Mutex<Option<Inbox>>,
    /// Set while a pull runs, to when the server may still answer it: left set when its receive was dropped (at
    /// shutdown), so `close` knows to collect and release what that pull still brings.
    open_pull: Mutex<Option<tokio::time::Instant>>,
    backstop: tokio::task::JoinHandle<()>,
}

impl NatsSubscription {
    pub(crate) fn new(s: Arc<Shared>, names: SubNames, spec: &SubscriptionSpec) -> Self {
        Self {
            backstop: crate::backstop::start(s.clone(), names.clone()),
            floor: s.floors.of(&names.consumer),
            s,
            names,
            exactly_once: spec.topic.config.is_exactly_once(),
            retention: spec.config.message_retention,
            ordered: spec.topic.config.ordered,
            dry: AtomicBool::new(false),
            inbox: tokio::sync::Mutex::new(None),
            open_pull: Mutex::new(None),
        }
    }

    /// Turns deliveries into tidings messages; acks and drops those not for this subscription.
    async fn accept(&self, raw: Vec<async_nats::Message>) -> Vec<ReceivedMessage> {
        let mut out = Vec::with_capacity(raw.len());
        let mut skip = Vec::new();
        let now = SystemTime::now();
        for m in raw {
            let Some(r) = m.reply.as_ref().map(|r| r.to_string()) else { continue };
            let Some(d) = delivery(&r) else {
                tracing::warn!(consumer = %self.names.consumer, reply = %r, "delivery without a JetStream reply subject");
                continue;
            };
            let (meta, msg_id, attributes) = split(m.headers.as_ref());
            if meta.as_ref().and_then(|m| m.target.as_deref()).is_some_and(|t| t != self.names.consumer) {
                skip.push((r, Bytes::from_static(b"+ACK")));
                continue;
            }
            let publish_time = meta.as_ref().filter(|m| m.ts > 0).map_or(d.stored, |m| from_micros(m.ts));
            if now.duration_since(publish_time).is_ok_and(|age| age > self.retention) {
                tracing::debug!(consumer = %self.names.consumer, seq = d.stream_seq, "older than the retention: dropped");
                skip.push((r, Bytes::from_static(b"+ACK")));
                continue;
            }
            let id = match meta.as_ref().filter(|m| !m.id.is_empty()) {
                Some(m) => m.id.clone(),
                None => msg_id.unwrap_or_else(|| format!("{}-{}", self.names.topic.stream, d.stream_seq)),
            };
            let trace = meta.as_ref().and_then(|m| m.trace.clone());
            let key = meta.and_then(|m| m.key).filter(|_| self.ordered);
            let counted = d.delivered.min(u64::from(u32::MAX)) as u32;
            let attempt = self.floor.attempt(d.stream_seq, counted);
            if attempt != counted {
                tracing::warn!(consumer = %self.names.consumer, seq = d.stream_seq, server_count = counted, attempt,
                    "JetStream handed out a message again with a delivery count below one already seen (nats-server \
                     before 2.10.14, nats-io/nats-server#5305); counting it as the next attempt");
            }
            let msg =
                ReceivedMessage::new(AckId::Text(r.into()), MessageId::from(id), m.payload, publish_time, attempt)
                    .with_attributes(attributes)
                    .with_ordering_key(key.map(Into::into))
                    .with_sequence(Some(d.stream_seq))
                    .with_trace(trace);
            out.push(msg);
        }
        if let Err(e) = send(&self.s, "ack of skipped deliveries", skip).await {
            tracing::debug!(error = %e, "skipped deliveries return later");
        }
        out
    }

    /// One pull, remembered as open until it returns.
    async fn pull(&self, inbox: &mut Inbox, batch: usize, expires: Option<Duration>) -> Result<crate::pull::Pulled> {
        let until = tokio::time::Instant::now() + expires.unwrap_or_default() + RELEASE_MARGIN;
        *self.open_pull.lock().unwrap() = Some(until);
        let r = pull(&self.s, &self.names, inbox, batch, expires).await;
        *self.open_pull.lock().unwrap() = None;
        r
    }

    /// Releases (nacks, without delay) what nobody will handle: deliveries a dropped receive's pull still brings into
    /// the inbox. Then the inbox goes.
    async fn release(&self) -> Result<()> {
        let mut left: Vec<AckId> = Vec::new();
        if let Some(mut inbox) = self.inbox.lock().await.take() {
            let until = self.open_pull.lock().unwrap().take();
            loop {
                let next = match until {
                    Some(until) => tokio::time::timeout_at(until, inbox.next()).await.ok().flatten(),
                    None => futures_util::FutureExt::now_or_never(inbox.next()).flatten(),
                };
                let Some(m) = next else { break };
                match m.status.map(|s| s.as_u16()) {
                    None | Some(200) => left.extend(m.reply.map(|r| AckId::Text(r.as_str().into()))),
                    Some(100) => {}
                    Some(_) => break, // the pull ended
                }
            }
            inbox.close().await;
        }
        let items = left.iter().map(|id| (reply(id).to_string(), nak(Duration::ZERO))).collect();
        send(&self.s, "release at close", items).await
    }

    /// Pulls for one receive: without waiting while messages are there, else one waiting pull and one for the rest.
    async fn pulled(&self, inbox: &mut Inbox, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        if !self.dry.load(Ordering::Relaxed) {
            let got = self.pull(inbox, max, None).await?.messages;
            self.dry.store(got.len() < max, Ordering::Relaxed);
            let out = self.accept(got).await;
            if !out.is_empty() {
                return Ok(out);
            }
        }
        let wait = wait.min(self.s.config.wait_time).max(Duration::from_millis(1));
        let mut got = self.pull(inbox, 1, Some(wait)).await?.messages;
        if !got.is_empty() && max > 1 {
            match self.pull(inbox, max - 1, None).await {
                Ok(rest) => {
                    self.dry.store(rest.messages.len() < max - 1, Ordering::Relaxed);
                    got.extend(rest.messages);
                }
                Err(e) => tracing::debug!(error = %e, "second pull failed; returning the first message"),
            }
        }
        Ok(self.accept(got).await)
    }

    /// The dead-letter stream.
    fn queue(&self) -> NatsDeadLetters {
        NatsDeadLetters::new(self.s.clone(), self.names.clone())
    }

    /// Messages acked or dead-lettered: forgotten by the attempt floor.
    fn done(&self, ids: &[AckId]) {
        self.floor.settled(ids.iter().filter_map(|id| delivery(reply(id))).map(|d| d.stream_seq));
    }
}

/// The same settle body for each delivery.
fn bodies(ids: &[AckId], body: &'static [u8]) -> Vec<(String, Bytes)> {
    ids.iter().map(|id| (reply(id).to_string(), Bytes::from_static(body))).collect()
}

impl Drop for NatsSubscription {
    fn drop(&mut self) {
        self.backstop.abort();
    }
}

#[async_trait]
impl SubscriptionDriver for NatsSubscription {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let max = max.max(1);
        let mut guard = self.inbox.lock().await;
        if guard.is_none() {
            *guard = Some(Inbox::new(&self.s, &self.names).await?);
        }
        let r = self.pulled(guard.as_mut().expect("made above"), max, wait).await;
        if r.is_err() {
            *guard = None; // a fresh inbox next time
        }
        r
    }

    async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
        if self.exactly_once {
            ack_sync(&self.s, &ids).await?;
        } else {
            send(&self.s, "ack", bodies(&ids, b"+ACK")).await?;
        }
        self.done(&ids);
        Ok(())
    }

    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()> {
        send(&self.s, "nack", items.iter().map(|(id, d)| (reply(id).to_string(), nak(*d))).collect()).await
    }

    async fn extend_lease(&self, ids: Vec<AckId>, _by: Duration) -> Result<()> {
        // `+WPI` restarts the consumer's ack wait, which is the ack deadline.
        send(&self.s, "lease extension", bodies(&ids, b"+WPI")).await
    }

    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()> {
        let seqs: Vec<u64> =
            items.iter().map(|r| delivery(reply(&r.message.ack_id)).map_or(0, |d| d.stream_seq)).collect();
        let results = dlq::copy(&self.s, &self.names, &items, &seqs).await;
        let mut first_err = None;
        let mut stored = Vec::new();
        for (r, res) in items.iter().zip(results) {
            match res {
                Ok(()) => stored.push(r.message.ack_id.clone()),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        send(&self.s, "terminate", bodies(&stored, b"+TERM")).await?;
        self.done(&stored);
        first_err.map_or(Ok(()), Err)
    }

    /// Delayed delivery at its due time: each copy is published to the topic's stream addressed to this
    /// subscription's consumer (the others ack and skip it) under a fresh `Nats-Msg-Id`, as a dead-letter restore
    /// publishes its copies; then the deliveries whose copies were stored are acked.
    async fn requeue(&self, messages: Vec<ReceivedMessage>) -> Result<()> {
        let names = &self.names;
        let mut acks = Vec::with_capacity(messages.len());
        for m in &messages {
            let key = m.ordering_key.as_deref().map(str::to_string);
            let meta = crate::meta::Meta {
                id: m.id.to_string(),
                ts: crate::meta::micros(m.publish_time),
                key: key.clone(),
                target: Some(names.consumer.clone()),
                trace: m.trace.clone(),
                ..Default::default()
            };
            let dedup = format!("{}-due-{}", m.id, uuid::Uuid::now_v7().simple());
            let subject = names.topic.subject(key.as_deref());
            let headers = crate::meta::headers(&dedup, &meta, &m.attributes);
            acks.push(self.s.js.publish_with_headers(subject, headers, m.payload.clone()).await);
        }
        self.s.calls.count("PUBLISH.ACKS");
        let mut stored = Vec::with_capacity(messages.len());
        let mut first_err = None;
        for (m, ack) in messages.iter().zip(acks) {
            let fail = |e| dlq::js_err("due-time copy publish", &names.topic.stream, e);
            match ack.map_err(fail) {
                Ok(pending) => match pending.await.map_err(fail) {
                    Ok(_) => stored.push(m.ack_id.clone()),
                    Err(e) => first_err = first_err.or(Some(e)),
                },
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        if self.exactly_once {
            ack_sync(&self.s, &stored).await?;
        } else {
            send(&self.s, "ack", bodies(&stored, b"+ACK")).await?;
        }
        self.done(&stored);
        first_err.map_or(Ok(()), Err)
    }

    fn dead_letter_queue(self: Arc<Self>) -> Option<Arc<dyn DeadLetters>> {
        Some(Arc::new(self.queue()))
    }

    async fn close(&self) -> Result<()> {
        self.dry.store(false, Ordering::Relaxed);
        self.release().await
    }

    async fn backlog(&self) -> Result<Option<u64>> {
        provision::backlog(&self.s, &self.names).await
    }
}
