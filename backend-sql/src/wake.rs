//! Wake-ups for waiting receivers, per topic: a publish or settlement in this process, a PostgreSQL notification,
//! or a change of the SQLite file seen through `PRAGMA data_version` wakes the receivers of the topics it concerns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug)]
pub(crate) struct Wake {
    topics: Mutex<HashMap<String, Arc<Notify>>>,
    /// Whether changes made by other processes are being signalled (the PostgreSQL listener is connected, or the
    /// SQLite watcher runs). While false, receivers poll at `poll`.
    pub signalled: AtomicBool,
    pub poll: Duration,
    /// Longest wait between two looks while signalled (a safety net, not the wake-up path).
    pub idle: Duration,
}

impl Wake {
    pub fn new(poll: Duration, idle: Duration) -> Self {
        Wake { topics: Mutex::default(), signalled: AtomicBool::new(false), poll, idle }
    }

    /// The notifier of a topic's receivers.
    pub fn topic(&self, topic: &str) -> Arc<Notify> {
        self.topics.lock().unwrap().entry(topic.to_string()).or_default().clone()
    }

    pub fn notify(&self, topic: &str) {
        if let Some(n) = self.topics.lock().unwrap().get(topic) {
            n.notify_waiters();
        }
    }

    pub fn notify_all(&self) {
        for n in self.topics.lock().unwrap().values() {
            n.notify_waiters();
        }
    }

    /// How long a receiver with nothing due may wait before looking again.
    pub fn fallback(&self) -> Duration {
        if self.signalled.load(Ordering::Acquire) {
            self.idle
        } else {
            self.poll
        }
    }
}
