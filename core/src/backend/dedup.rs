//! A time-windowed set of message ids, for exactly-once de-duplication where the broker does not do it itself.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Ids seen within the last `window`; older ones are forgotten as new ones arrive (memory is bounded by the ids of
/// one window).
#[derive(Debug)]
pub struct SeenIds<K> {
    window: Duration,
    seen: HashSet<K>,
    order: VecDeque<(Instant, K)>,
}

impl<K: Hash + Eq + Clone> SeenIds<K> {
    /// An empty set remembering ids for `window`.
    pub fn new(window: Duration) -> Self {
        Self { window, seen: HashSet::new(), order: VecDeque::new() }
    }

    /// Records `id` as seen at `now`; `false` when it was already seen within the window.
    pub fn insert(&mut self, id: K, now: Instant) -> bool {
        self.expire(now);
        if !self.seen.insert(id.clone()) {
            return false;
        }
        self.order.push_back((now, id));
        true
    }

    /// Whether `id` was seen within the window (as of the last insert or expiry).
    pub fn contains<Q>(&self, id: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.seen.contains(id)
    }

    /// Forgets ids seen more than the window before `now`.
    pub fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > self.window) {
            let (_, id) = self.order.pop_front().expect("front exists");
            self.seen.remove(&id);
        }
    }

    /// How many ids are remembered (seen within the window, as of the last [`expire`](Self::expire)).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_duplicate_within_the_window_and_forgotten_after() {
        let t0 = Instant::now();
        let mut s = SeenIds::new(Duration::from_secs(10));
        assert!(s.insert("a", t0));
        assert!(!s.insert("a", t0 + Duration::from_secs(5)));
        assert!(s.insert("b", t0 + Duration::from_secs(6)));
        assert!(s.insert("a", t0 + Duration::from_secs(11)), "forgotten after the window");
        assert!(s.contains("b"));
        s.expire(t0 + Duration::from_secs(17));
        assert!(!s.contains("b") && s.len() == 1);
    }
}
