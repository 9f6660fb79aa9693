//! The action log: each redrive or purge with who asked and what happened, kept in memory for the page and logged
//! through tracing.

use std::sync::Mutex;

use serde::Serialize;

/// Entries kept for the page.
const KEEP: usize = 200;

/// One action.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// When, RFC 3339.
    pub at: String,
    /// Who: peer address and user agent, as the request shows them.
    pub who: String,
    /// `redrive` or `purge`.
    pub action: String,
    /// `topic/subscription`.
    pub subscription: String,
    /// The reason group acted on.
    pub reason: String,
    /// Messages moved or deleted, or the error.
    pub outcome: String,
}

#[derive(Debug, Default)]
pub(crate) struct Log {
    entries: Mutex<Vec<Entry>>,
}

impl Log {
    pub(crate) fn record(&self, e: Entry) {
        tracing::info!(
            target: "tidings::dashboard",
            who = %e.who,
            action = %e.action,
            subscription = %e.subscription,
            reason = %e.reason,
            outcome = %e.outcome,
            "dashboard action"
        );
        let mut v = self.entries.lock().unwrap();
        v.push(e);
        let excess = v.len().saturating_sub(KEEP);
        v.drain(..excess);
    }

    pub(crate) fn list(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().iter().rev().cloned().collect()
    }
}
