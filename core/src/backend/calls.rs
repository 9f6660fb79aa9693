//! Counts of a backend's API calls or server round trips by operation: on a cloud they are the bill (SNS `Publish`,
//! SQS `ReceiveMessage`...), on a server what the client waits for, so a backend counts every one it makes.
//!
//! Each count is also emitted as the `tidings.api.calls` metric (and `tidings.api.bytes` where the driver knows the
//! payload bytes a call carried), labelled with the backend, the operation and, where the call is for one, the topic
//! and subscription: [`ApiCalls::count_for`] names them explicitly (drivers build their [`Scope`] once), and calls a
//! backend makes inside a driver call or while core provisions a topic or subscription are labelled with it through
//! [`scoped`] (core runs every driver call of a backend that counts calls within its scope). Calls a driver makes
//! from tasks of its own (a background pull) name their scope with [`ApiCalls::count_for`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::Label;

use crate::metrics::{API_BYTES, API_CALLS};

mod drivers;
pub(crate) use drivers::{ScopedSubscription, ScopedTopic};

/// The topic (and subscription) an API call is for: metric labels built once per driver.
#[derive(Debug, Clone, Default)]
pub struct Scope(Arc<[Label]>);

impl Scope {
    /// Calls for no one topic (listing, operator tools).
    pub fn none() -> Self {
        Self::default()
    }

    /// The scope of the calls counted here (see [`scoped`]): for a task a driver spawns, which does not inherit it.
    pub fn current() -> Self {
        SCOPE.try_with(Scope::clone).unwrap_or_default()
    }

    /// Calls for topic `topic` (its logical name).
    pub fn topic(topic: &str) -> Self {
        Self(Arc::new([Label::new("topic", topic.to_string())]))
    }

    /// Calls for subscription `subscription` of topic `topic` (logical names).
    pub fn subscription(topic: &str, subscription: &str) -> Self {
        Self(Arc::new([Label::new("topic", topic.to_string()), Label::new("subscription", subscription.to_string())]))
    }
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `fut` with `scope` as the scope of the calls counted with [`ApiCalls::count`] inside it (on its own task,
/// not in tasks it spawns).
pub async fn scoped<F: Future>(scope: Scope, fut: F) -> F::Output {
    SCOPE.scope(scope, fut).await
}

/// Calls made through one backend, by operation name (`sns:PublishBatch`, `sqs:ReceiveMessage`, `PULL`, ...).
#[derive(Debug)]
pub struct ApiCalls {
    backend: &'static str,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    total: AtomicU64,
}

impl ApiCalls {
    /// Counts of the backend named `backend` (the `backend` label: `aws`, `gcp`, `nats`, ...).
    pub fn new(backend: &'static str) -> Self {
        Self { backend, counts: Mutex::default(), total: AtomicU64::new(0) }
    }

    /// Counts one call of `op`, for the topic or subscription core is provisioning, if any (see [`scoped`]).
    pub fn count(&self, op: &'static str) {
        match SCOPE.try_with(Scope::clone) {
            Ok(scope) => self.count_for(op, &scope, None),
            Err(_) => self.count_for(op, &Scope::none(), None),
        }
    }

    /// Counts one call of `op` carrying `bytes` payload bytes, scoped as [`ApiCalls::count`].
    pub fn count_bytes(&self, op: &'static str, bytes: usize) {
        match SCOPE.try_with(Scope::clone) {
            Ok(scope) => self.count_for(op, &scope, Some(bytes)),
            Err(_) => self.count_for(op, &Scope::none(), Some(bytes)),
        }
    }

    /// Counts one call of `op` for `scope`, carrying `bytes` payload bytes where the driver knows them.
    pub fn count_for(&self, op: &'static str, scope: &Scope, bytes: Option<usize>) {
        *self.counts.lock().unwrap().entry(op).or_default() += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        let labels = || {
            let mut l = Vec::with_capacity(2 + scope.0.len());
            l.push(Label::new("backend", self.backend));
            l.push(Label::new("operation", op));
            l.extend(scope.0.iter().cloned());
            l
        };
        metrics::counter!(API_CALLS, labels()).increment(1);
        if let Some(b) = bytes {
            metrics::counter!(API_BYTES, labels()).increment(b as u64);
        }
    }

    /// Calls so far, by operation.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().unwrap().clone()
    }

    /// Calls so far, all operations together (the sum of [`ApiCalls::snapshot`]).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn calls_are_counted_by_operation_and_in_all() {
        let c = super::ApiCalls::new("test");
        c.count("a");
        c.count("b");
        c.count("a");
        assert_eq!(c.snapshot().into_iter().collect::<Vec<_>>(), vec![("a", 2), ("b", 1)]);
        assert_eq!(c.total(), 3);
    }
}
