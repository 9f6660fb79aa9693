//! Server round trips by operation: what the backend waits for (a pull, a batch's publish acks, a flush of settles,
//! a JetStream API call). Messages written without waiting (publishes before their acks, acks before the flush) are
//! not round trips of their own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Round trips made through one backend, by operation (`PULL`, `PUBLISH.ACKS`, `FLUSH`, `STREAM.INFO`, ...).
#[derive(Debug, Default)]
pub struct RoundTrips {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    total: AtomicU64,
}

impl RoundTrips {
    pub(crate) fn count(&self, op: &'static str) {
        *self.counts.lock().unwrap().entry(op).or_default() += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Round trips so far, by operation.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().unwrap().clone()
    }

    /// All round trips so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}
