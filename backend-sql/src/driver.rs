//! The topic and subscription drivers: thin over the [`Store`], plus the wait for work between claims.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tidings_core::backend::time::micros;
use tidings_core::backend::{
    AckId, DeadLetterRequest, OutgoingMessage, ReceivedMessage, SubscriptionDriver, TopicDriver,
};
use tidings_core::dead_letter::DeadLetters;
use tidings_core::{BacklogDetail, PublishReport, Result, SubscriptionConfig};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::dead_letters::SqlDeadLetters;
use crate::error::parse_ack_id;
use crate::store::Store;
use crate::wake::Wake;

/// How often a subscription driver drops expired deliveries (retention) and de-duplication rows.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

fn now_us() -> i64 {
    micros(SystemTime::now())
}

fn us(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

/// Publishes to one topic: one delivery row per subscription registered at that moment.
#[derive(Debug)]
pub(crate) struct SqlTopic {
    pub store: Arc<dyn Store>,
    pub wake: Arc<Wake>,
    pub topic: String,
    pub dedup: bool,
}

#[async_trait]
impl TopicDriver for SqlTopic {
    /// All or nothing: the batch, of any size (`Capabilities::atomic_publish`), is one transaction.
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport> {
        self.store.publish(&self.topic, self.dedup, batch).await?;
        self.wake.notify(&self.topic);
        Ok(PublishReport::accepted())
    }

    /// Deletes the message's rows that are still scheduled (due later, never claimed), in every subscription.
    async fn cancel(&self, id: &tidings_core::MessageId) -> Result<bool> {
        let now = tidings_core::backend::time::micros(std::time::SystemTime::now());
        Ok(self.store.cancel(&self.topic, id.as_str(), now).await? > 0)
    }
}

/// One subscription's deliveries, shared with every process subscribed under the same name.
#[derive(Debug)]
pub(crate) struct SqlSubscription {
    pub store: Arc<dyn Store>,
    pub wake: Arc<Wake>,
    pub notify: Arc<Notify>,
    pub topic: String,
    pub sub: i64,
    pub ordered: bool,
    pub dedup: bool,
    pub config: SubscriptionConfig,
    pub last_sweep: Mutex<Option<Instant>>,
    /// The rows this driver leased and has not settled, by message id, for acks inside an application's transaction.
    pub held: Arc<crate::settle_in::Held>,
}

impl SqlSubscription {
    async fn sweep_now_and_then(&self) -> Result<()> {
        {
            let mut last = self.last_sweep.lock().unwrap();
            if last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let now = now_us();
        let n = self.store.sweep(self.sub, now, now - us(self.config.message_retention)).await?;
        if n > 0 {
            tracing::debug!(subscription = self.sub, expired = n, "dropped deliveries past retention");
        }
        Ok(())
    }

    /// Settlements that may unblock an ordering key or make work visible: wake this process's receivers, and (on
    /// PostgreSQL) other processes'.
    async fn changed(&self, others: bool) -> Result<()> {
        self.wake.notify(&self.topic);
        if others {
            self.store.signal(&self.topic).await?;
        }
        Ok(())
    }

    /// This subscription's dead-letter queue.
    fn letters(&self) -> SqlDeadLetters {
        SqlDeadLetters { store: self.store.clone(), wake: self.wake.clone(), topic: self.topic.clone(), sub: self.sub }
    }
}

fn pairs(ids: &[AckId]) -> Vec<(i64, i64)> {
    ids.iter().filter_map(parse_ack_id).collect()
}

#[async_trait]
impl SubscriptionDriver for SqlSubscription {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let give_up = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            self.sweep_now_and_then().await?;
            let now = now_us();
            let until = now + us(self.config.ack_deadline);
            let lease = uuid::Uuid::new_v4().as_u64_pair().0 as i64;
            let got = self.store.claim(self.sub, self.ordered, max, now, until, lease).await?;
            self.held.claimed(&got);
            if !got.is_empty() || Instant::now() >= give_up {
                return Ok(got);
            }
            let due = self.store.next_due(self.sub, self.ordered).await?;
            let (now, fallback) = (now_us(), self.wake.fallback());
            let pause = match due {
                Some(t) if t > now => Duration::from_micros((t - now) as u64).min(fallback),
                // Claimable, yet a concurrent claim took it or it arrived after ours: look again shortly.
                Some(_) => Duration::from_millis(20).min(fallback),
                None => fallback,
            };
            let wake_at = (Instant::now() + pause).min(give_up);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
        self.held.settled(&ids);
        let keep_until = self.dedup.then(|| now_us() + us(self.config.message_retention));
        self.store.ack(&pairs(&ids), keep_until).await?;
        if self.ordered {
            self.changed(true).await?;
        }
        Ok(())
    }

    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()> {
        self.held.settled(items.iter().map(|(id, _)| id));
        let now = now_us();
        let items: Vec<(i64, i64, i64)> = items
            .iter()
            .filter_map(|(id, delay)| parse_ack_id(id).map(|(seq, lease)| (seq, lease, now + us(*delay))))
            .collect();
        self.store.nack(&items).await?;
        self.changed(false).await
    }

    async fn extend_lease(&self, ids: Vec<AckId>, by: Duration) -> Result<()> {
        self.store.extend(&pairs(&ids), now_us() + us(by)).await
    }

    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()> {
        self.held.settled(items.iter().map(|r| &r.message.ack_id));
        let items: Vec<(i64, i64, String)> = items
            .into_iter()
            .filter_map(|r| parse_ack_id(&r.message.ack_id).map(|(seq, lease)| (seq, lease, r.reason)))
            .collect();
        self.store.dead_letter(&items, now_us()).await?;
        self.changed(self.ordered).await
    }

    fn dead_letter_queue(self: Arc<Self>) -> Option<Arc<dyn DeadLetters>> {
        Some(Arc::new(self.letters()))
    }

    async fn backlog(&self) -> Result<Option<u64>> {
        let sql = &self.store.sql().backlog;
        Ok(Some(self.store.count(sql, self.sub).await?))
    }

    async fn backlog_detail(&self) -> Result<BacklogDetail> {
        let (total, scheduled) = self.store.backlog_detail(self.sub, now_us()).await?;
        Ok(BacklogDetail::new(Some(total)).with_scheduled(Some(scheduled)))
    }
}
