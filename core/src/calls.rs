//! Counts of a backend's API calls or server round trips by operation: on a cloud they are the bill (SNS `Publish`,
//! SQS `ReceiveMessage`...), on a server what the client waits for, so a backend counts every one it makes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Calls made through one backend, by operation name (`sns:PublishBatch`, `sqs:ReceiveMessage`, `PULL`, ...).
#[derive(Debug, Default)]
pub struct ApiCalls {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    total: AtomicU64,
}

impl ApiCalls {
    /// Counts one call of `op`.
    pub fn count(&self, op: &'static str) {
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

#[cfg(test)]
mod tests {
    #[test]
    fn calls_are_counted_by_operation_and_in_all() {
        let c = super::ApiCalls::default();
        c.count("a");
        c.count("b");
        c.count("a");
        assert_eq!(c.snapshot().into_iter().collect::<Vec<_>>(), vec![("a", 2), ("b", 1)]);
        assert_eq!(c.total(), 3);
    }
}
