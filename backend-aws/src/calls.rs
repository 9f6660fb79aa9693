//! Counts of AWS API calls by operation: they are the AWS bill, so the backend counts every one it makes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// API calls made through one backend, by operation name (`sns:PublishBatch`, `sqs:ReceiveMessage`, ...).
#[derive(Debug, Default)]
pub struct ApiCalls {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    total: AtomicU64,
}

impl ApiCalls {
    pub(crate) fn count(&self, op: &'static str) {
        *self.counts.lock().unwrap().entry(op).or_default() += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls so far, by operation.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().unwrap().clone()
    }

    /// All calls so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}
