//! Batch handlers through the inbox ([`Inbox::subscribe_batch`]): one transaction per batch, one inbox row per
//! message.
//!
//! The batch's transaction first inserts a row per message; a message whose row is there already was processed (it
//! is acked, and not handed to the handler). The handler gets the others and the transaction, and returns an outcome
//! for them with the transaction. Then the rows of the messages it did not ack (retried or dead-lettered) are
//! deleted, so only the acked messages' rows commit, with the handler's writes and its outbox publishes; a message
//! that comes back after a retry runs again. After the commit each message is settled on its own, as any batch
//! handler's. An `Err`, a panic, a wrong number of outcomes or a failed commit rolls everything back and fails every
//! message of the batch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tidings_core::handler::BatchFuture;
use tidings_core::{
    BatchHandler, BatchOutcome, BatchResult, Bus, HandlerError, HandlerResult, Message, MessageId, Result,
    Subscription, SubscriptionConfig, Topic,
};

use crate::dialect::Mark;
use crate::{ended_by_handler, failed, micros, Inbox, InboxDatabase, InboxTx, Run, TOKENS};

/// What an inbox batch handler returns: the outcome of the messages it was handed, and the transaction to commit.
pub type InboxBatchResult<DB> = std::result::Result<(BatchOutcome, InboxTx<DB>), HandlerError>;

impl<DB: InboxDatabase> Inbox<DB> {
    /// Subscribes a batch handler to `topic` on `bus` as [`Bus::subscribe_batch`] does, through the inbox: each batch
    /// runs in one transaction of this inbox's database, which first records every message of the batch (one row
    /// each). Messages recorded already are acked without being handed over; when none is left the handler is not
    /// called. The handler gets the rest (in the batch's order) and the transaction, and returns
    /// `Ok((outcome, tx))`:
    ///
    /// - [`BatchOutcome::AckAll`]: every row commits with the handler's writes, then every message is acked.
    /// - [`BatchOutcome::Each`] (one result per message handed over, in order): the rows of the messages given an
    ///   `Err` (retried, or dead-lettered when unrecoverable) are deleted before the commit, so only the acked
    ///   messages' rows commit, and a retried message runs again when it comes back. The transaction commits as one:
    ///   the handler's writes for a message it does not ack commit too, so a handler that gives a message an `Err`
    ///   must not have written its effect (or returns `Err` for the whole batch, which rolls everything back).
    ///
    /// An `Err`, a panic, an outcome count other than the messages handed over, or a `COMMIT`/`ROLLBACK` the handler
    /// ran itself rolls the whole transaction back, and every message of the batch is retried (or dead-lettered) on
    /// its own, as with [`Bus::subscribe_batch`]. On an ordered topic a key's later messages go back with a retried
    /// one (as with any batch handler); those the handler acked keep their rows, and are acked without running again
    /// when they come back: to have them run after the retried one, give them an `Err` too.
    ///
    /// Two copies of one message in a batch (its lease ran out while the batch was gathered): the first is handed
    /// over, the second gets its outcome.
    ///
    /// Each running batch holds one connection of the pool (`max_concurrency` counts batches).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use serde::{Deserialize, Serialize};
    /// # use tidings::{BatchOutcome, SubscriptionConfig, Topic, TopicConfig};
    /// # #[derive(Serialize, Deserialize)] struct Payment { order: i64, cents: i64 }
    /// # static PAYMENTS: Topic<Payment> = Topic::new("payments", TopicConfig::at_least_once());
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let file = std::env::temp_dir().join(format!("tidings-inbox-batch-doc-{}.db", std::process::id()));
    /// # let url = format!("sqlite://{}?mode=rwc", file.display());
    /// use tidings_inbox::Inbox;
    ///
    /// let bus = tidings::local();
    /// let pool = sqlx::SqlitePool::connect(&url).await?;
    /// # sqlx::query("CREATE TABLE ledger (order_id INTEGER, cents INTEGER)").execute(&pool).await?;
    /// let inbox = Inbox::sqlite(pool.clone());
    /// let config = SubscriptionConfig::default().with_max_messages(100).with_max_wait(Duration::from_millis(50));
    /// let billing = inbox
    ///     .subscribe_batch(&bus, &PAYMENTS, "billing", config, |payments, mut tx| async move {
    ///         for p in &payments {
    ///             sqlx::query("INSERT INTO ledger (order_id, cents) VALUES (?, ?)")
    ///                 .bind(p.order)
    ///                 .bind(p.cents)
    ///                 .execute(&mut *tx)
    ///                 .await?;
    ///         }
    ///         Ok((BatchOutcome::AckAll, tx)) // the rows and the writes commit together, then the batch is acked
    ///     })
    ///     .await?;
    ///
    /// let id = PAYMENTS.publish(&bus, &Payment { order: 7, cents: 1250 }).await?;
    /// # assert!(billing.wait_idle(Duration::from_secs(10)).await?);
    /// // The same message again: recorded already, so acked without being handed over.
    /// PAYMENTS.publish_with(&bus, &Payment { order: 7, cents: 1250 }, tidings::PublishOptions::new().id(id)).await?;
    /// # assert!(billing.wait_idle(Duration::from_secs(10)).await?);
    /// # let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger").fetch_one(&pool).await?;
    /// # assert_eq!(rows, 1, "the effect happened once");
    /// bus.shutdown(Duration::from_secs(5)).await;
    /// # pool.close().await;
    /// # for end in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{end}", file.display())); }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe_batch<T, F, Fut>(
        &self,
        bus: &Bus,
        topic: &Topic<T>,
        name: &str,
        config: SubscriptionConfig,
        handler: F,
    ) -> Result<Subscription>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(Vec<Message<T>>, InboxTx<DB>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = InboxBatchResult<DB>> + Send + 'static,
    {
        let handler = self.batch_handler(bus, topic, name, config, handler).await?;
        bus.subscribe_batch(topic, name, config, handler).await
    }

    /// The batch handler [`Inbox::subscribe_batch`] subscribes, for wrapping it before [`Bus::subscribe_batch`]: pass
    /// the same topic, subscription name and config there (the inbox keys its rows by that subscription).
    pub async fn batch_handler<T, F, Fut>(
        &self,
        bus: &Bus,
        topic: &Topic<T>,
        name: &str,
        config: SubscriptionConfig,
        handler: F,
    ) -> Result<impl BatchHandler<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: Fn(Vec<Message<T>>, InboxTx<DB>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = InboxBatchResult<DB>> + Send + 'static,
    {
        Ok(InboxBatchHandler { run: self.run(bus, topic, name, config).await?, f: Arc::new(handler) })
    }
}

/// A batch handler that runs the application's batch handler inside one inbox transaction.
struct InboxBatchHandler<DB: InboxDatabase, F> {
    run: Arc<Run<DB>>,
    f: Arc<F>,
}

impl<T, DB, F, Fut> BatchHandler<T> for InboxBatchHandler<DB, F>
where
    T: Send + 'static,
    DB: InboxDatabase,
    F: Fn(Vec<Message<T>>, InboxTx<DB>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = InboxBatchResult<DB>> + Send + 'static,
{
    fn call(&self, batch: Vec<Message<T>>) -> BatchFuture {
        let (run, f) = (self.run.clone(), self.f.clone());
        Box::pin(async move { run.handle_batch(batch, &*f).await })
    }
}

impl<DB: InboxDatabase> Run<DB> {
    async fn handle_batch<T, F, Fut>(&self, batch: Vec<Message<T>>, f: &F) -> BatchResult
    where
        F: Fn(Vec<Message<T>>, InboxTx<DB>) -> Fut,
        Fut: Future<Output = InboxBatchResult<DB>>,
    {
        let n = batch.len();
        let ids: Vec<MessageId> = batch.iter().map(|m| m.id().clone()).collect();
        let mut tx = DB::begin(&self.pool).await.map_err(|e| failed("beginning the batch's transaction", e))?;
        let now = micros(SystemTime::now());
        let expires = now.saturating_add(self.window.as_micros().min(i64::MAX as u128) as i64);
        // Inserted in the order of their ids: two batches holding copies of the same messages (a lease ran out) take
        // their rows' locks in one order, so the second waits for the first instead of deadlocking with it.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|a, b| ids[*a].as_str().cmp(ids[*b].as_str()));
        let mut inserted = vec![false; n];
        // The last insert's mark: on SQLite each insert replaces the connection's hooks.
        let mut mark: Option<Mark> = None;
        for i in order {
            let id = ids[i].as_str();
            let row = DB::insert(&mut tx, &self.st, &self.resource, id, now, expires)
                .await
                .map_err(|e| failed("recording the batch's messages in the inbox", e))?;
            if let Some(m) = row {
                (mark, inserted[i]) = (Some(m), true);
            }
        }
        // The batch's messages handed over (in the batch's order): their index in the batch and id.
        let mut fresh = Vec::with_capacity(n);
        let mut handed = Vec::with_capacity(n);
        for (i, message) in batch.into_iter().enumerate().filter(|(i, _)| inserted[*i]) {
            fresh.push((i, message.id().clone()));
            handed.push(message);
        }
        let skipped = n - fresh.len();
        if skipped > 0 {
            self.skipped.increment(skipped as u64);
            tracing::debug!(target: "tidings", subscription = %self.resource, skipped, batch = n,
                tidings.inbox = "skipped", "messages of the batch already processed (their inbox rows are there): acked");
        }
        let Some(mark) = mark else {
            let _ = tx.rollback().await;
            return Ok(BatchOutcome::AckAll);
        };
        let token = TOKENS.fetch_add(1, Ordering::Relaxed);
        let (outcome, back) = f(handed, InboxTx { tx, token }).await?;
        if back.token != token {
            return Err(HandlerError::retry(
                "inbox: the batch handler returned another delivery's transaction; it must return the one it was given",
            ));
        }
        let mut tx = back.tx;
        let results = match outcome {
            BatchOutcome::AckAll => None,
            BatchOutcome::Each(results) if results.len() == fresh.len() => Some(results),
            BatchOutcome::Each(results) => {
                let _ = tx.rollback().await;
                return Err(HandlerError::retry(format!(
                    "inbox: the batch handler returned {} outcomes for the {} messages it was handed (of a batch of \
                     {n}, {skipped} processed already); BatchOutcome::Each needs one per message handed over, in order: \
                     the transaction rolled back and every message of the batch is retried",
                    results.len(),
                    fresh.len()
                )));
            }
        };
        let not_acked: Vec<&str> = match &results {
            None => Vec::new(),
            Some(r) => fresh.iter().zip(r).filter(|(_, r)| r.is_err()).map(|((_, id), _)| id.as_str()).collect(),
        };
        if self.exact || !not_acked.is_empty() {
            // Checked first: after a handler's own COMMIT, these statements would commit on their own.
            let open = DB::still_open(&mut tx, &mark).await.map_err(|e| failed("checking the transaction", e))?;
            if !open {
                DB::reopen(&mut tx).await;
                let _ = tx.rollback().await;
                return Err(ended_by_handler());
            }
        }
        for id in &not_acked {
            DB::forget(&mut tx, &self.st, &self.resource, id)
                .await
                .map_err(|e| failed("deleting the inbox row of a message not acked", e))?;
        }
        if self.exact {
            let acked = fresh.iter().zip(0..).filter(|(_, k)| results.as_ref().is_none_or(|r| r[*k].is_ok()));
            for ((_, id), _) in acked {
                tidings_sql::ack_in(&self.bus, DB::in_transaction(&mut tx), &self.resource, id).await.map_err(|e| {
                    HandlerError::retry(format!("inbox: acking the batch's deliveries in the transaction failed: {e}"))
                })?;
            }
        }
        match DB::commit(tx, &mark).await {
            Ok(true) => {}
            Ok(false) => return Err(ended_by_handler()),
            Err(e) => return Err(failed("committing the batch", e)),
        }
        self.processed.increment((fresh.len() - not_acked.len()) as u64);
        let Some(results) = results else { return Ok(BatchOutcome::AckAll) };
        // Back to the whole batch: a message processed already is acked.
        let mut all: Vec<HandlerResult> = (0..n).map(|_| Ok(())).collect();
        let mut handed_at: HashMap<&str, usize> = HashMap::with_capacity(fresh.len());
        for ((i, id), r) in fresh.iter().zip(results) {
            handed_at.insert(id.as_str(), *i);
            all[*i] = r;
        }
        // A second copy of a message handed over in this batch (its lease ran out while the batch was gathered) takes
        // that copy's outcome: acking it would settle a message whose row did not commit.
        for (i, id) in ids.iter().enumerate() {
            match handed_at.get(id.as_str()) {
                Some(&k) if k != i => all[i] = all[k].as_ref().map(|_| ()).map_err(same_error),
                _ => {}
            }
        }
        Ok(BatchOutcome::Each(all))
    }
}

/// The same outcome again, for another copy of the message.
fn same_error(e: &HandlerError) -> HandlerError {
    match e.is_unrecoverable() {
        true => HandlerError::unrecoverable(e.reason()),
        false => HandlerError::retry(e.reason()),
    }
}
