//! The relay: takes committed outbox rows in batches, publishes them through the bus, and deletes them only after
//! the bus accepted them. Transient failures back off (jittered, up to 5 s); a topic whose rows the bus rejects
//! permanently is paused for a minute (its rows stay) so other topics keep flowing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tidings_core::{Bus, Result};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a topic whose rows failed permanently is skipped.
const PAUSE_ON_PERMANENT_ERROR: Duration = Duration::from_secs(60);

/// A database-specific outbox store.
#[async_trait]
pub(crate) trait Store: Send + Sync + 'static {
    /// Whether this relay may work now (SQLite: holds the lease). Called before each batch.
    async fn acquire(&self) -> Result<bool> {
        Ok(true)
    }
    /// Claims up to `max` rows of one topic not in `paused`, publishes them in order, deletes them.
    /// Returns the topic and the number of rows relayed (0 when nothing is ready).
    async fn relay_batch(
        &self,
        bus: &Bus,
        max: usize,
        paused: &[String],
    ) -> std::result::Result<usize, (String, tidings_core::Error)>;
    /// Waits for a commit notification, at most `timeout`.
    async fn wait(&self, timeout: Duration);
    /// Rows not yet relayed, and the insert time (microseconds since the Unix epoch) of the oldest.
    async fn pending(&self) -> Result<(u64, Option<i64>)>;
    /// Gives up what `acquire` holds, at a graceful stop, so a standby relay takes over at once (SQLite: the lease).
    async fn release(&self) -> Result<()> {
        Ok(())
    }
}

/// The outbox relay lag histogram of `table`.
pub(crate) fn lag_histogram(table: &str) -> metrics::Histogram {
    metrics::histogram!(tidings_core::metrics::OUTBOX_RELAY_LAG, "table" => table.to_string())
}

/// A relay for one outbox; configure it, then [`Relay::spawn`] it or call [`Relay::drain`].
pub struct Relay {
    store: Arc<dyn Store>,
    bus: Bus,
    batch_size: usize,
    poll_interval: Duration,
    table: Arc<str>,
    metrics_interval: Duration,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl Relay {
    pub(crate) fn new(store: Arc<dyn Store>, bus: Bus, poll_interval: Duration, table: Arc<str>) -> Self {
        let metrics_interval = tidings_core::metrics::DEFAULT_BACKLOG_INTERVAL;
        Self { store, bus, batch_size: 100, poll_interval, table, metrics_interval }
    }

    /// How often a running relay samples the outbox gauges (`tidings.outbox.pending`, `...oldest_pending.age`) while
    /// a metrics recorder is installed: every 15 s unless set; zero turns sampling off.
    pub fn metrics_interval(mut self, d: Duration) -> Self {
        self.metrics_interval = d;
        self
    }

    /// Rows per claim (default 100). The rows of a claim go to the bus in one publish call (per run of rows with the
    /// same topic config), which a bus that takes batches atomically (SQLite, PostgreSQL, the in-memory bus;
    /// `Capabilities::atomic_publish`) accepts whole or not at all, at any size.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How often to look for rows when no notification arrives (PostgreSQL default 1 s, SQLite 50 ms).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d.max(Duration::from_millis(1));
        self
    }

    /// Relays until the outbox is empty (or an error), then returns the number of rows relayed. For batch jobs and
    /// tests; a service normally uses [`Relay::spawn`].
    pub async fn drain(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            if !self.store.acquire().await? {
                return Ok(total);
            }
            match self.store.relay_batch(&self.bus, self.batch_size, &[]).await {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err((_, e)) => return Err(e),
            }
        }
    }

    /// Runs the relay in a background task until [`RelayHandle::shutdown`].
    pub fn spawn(self) -> RelayHandle {
        let cancel = CancellationToken::new();
        let relayed = Arc::new(AtomicU64::new(0));
        let join = tokio::spawn(self.run(cancel.clone(), relayed.clone()));
        RelayHandle { cancel, relayed, join }
    }

    /// Samples the outbox gauges every `metrics_interval` until `cancel`, while a recorder is installed.
    fn sample_pending(&self, cancel: CancellationToken) {
        if self.metrics_interval.is_zero() || !tidings_core::metrics::recording() {
            return;
        }
        let table = self.table.to_string();
        let pending = metrics::gauge!(tidings_core::metrics::OUTBOX_PENDING, "table" => table.clone());
        let oldest = metrics::gauge!(tidings_core::metrics::OUTBOX_OLDEST_PENDING_AGE, "table" => table);
        let (store, interval) = (self.store.clone(), self.metrics_interval);
        tokio::spawn(async move {
            loop {
                match store.pending().await {
                    Ok((n, first)) => {
                        pending.set(n as f64);
                        let now = tidings_core::backend::time::micros(std::time::SystemTime::now());
                        oldest.set(first.map_or(0.0, |t| (now - t).max(0) as f64 / 1e6));
                    }
                    Err(e) => tracing::debug!(error = %e, "outbox relay: counting pending rows failed"),
                }
                tokio::select! { _ = tokio::time::sleep(interval) => {}, _ = cancel.cancelled() => return }
            }
        });
    }

    async fn run(self, cancel: CancellationToken, relayed: Arc<AtomicU64>) {
        self.sample_pending(cancel.clone());
        let mut backoff = Duration::from_millis(100);
        let mut paused: HashMap<String, Instant> = HashMap::new();
        while !cancel.is_cancelled() {
            let now = Instant::now();
            paused.retain(|_, until| *until > now);
            let skip: Vec<String> = paused.keys().cloned().collect();
            let outcome = match self.store.acquire().await {
                Ok(true) => self.store.relay_batch(&self.bus, self.batch_size, &skip).await,
                Ok(false) => Ok(0),
                Err(e) => Err((String::new(), e)),
            };
            match outcome {
                Ok(0) => {
                    tokio::select! { _ = self.store.wait(self.poll_interval) => {}, _ = cancel.cancelled() => {} }
                }
                Ok(n) => {
                    relayed.fetch_add(n as u64, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                }
                Err((topic, e)) if !e.is_retryable() && !topic.is_empty() => {
                    tracing::error!(topic, error = %e, pause = ?PAUSE_ON_PERMANENT_ERROR,
                        "outbox relay: the bus rejected this topic's rows; they stay in the outbox");
                    paused.insert(topic, Instant::now() + PAUSE_ON_PERMANENT_ERROR);
                }
                Err((topic, e)) => {
                    tracing::warn!(topic, error = %e, retry_in = ?backoff, "outbox relay: batch failed; rows stay and are retried");
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |t| t.subsec_nanos());
                    let delay = backoff.mul_f64(0.5 + (nanos % 1000) as f64 / 1000.0);
                    tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = cancel.cancelled() => {} }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let Err(e) = self.store.release().await {
            tracing::warn!(error = %e, "outbox relay: could not hand over its lease at shutdown; a standby waits for it to expire");
        }
    }
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    cancel: CancellationToken,
    relayed: Arc<AtomicU64>,
    join: JoinHandle<()>,
}

impl RelayHandle {
    /// Rows this relay has published and deleted so far.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    /// Finishes the batch in flight, then stops; returns the rows this relay published and deleted in all.
    pub async fn shutdown(self) -> u64 {
        self.cancel.cancel();
        let _ = self.join.await;
        self.relayed.load(Ordering::Acquire)
    }

    /// Stops at once, like a crash: a batch in flight is rolled back (its rows stay) and is published again by the
    /// next relay, with the same message ids.
    pub async fn abort(self) {
        self.join.abort();
        let _ = self.join.await;
    }
}
