//! A floor under each delivery's attempt. The attempt is JetStream's delivery count (in the reply subject), but
//! nats-server before 2.10.14 can hand a message out again as new, count 1: when a redelivery finds at the head of the
//! consumer's waiting pulls one whose client is gone (unsubscribed, disconnected) or whose request just expired, the
//! server drops that pull and steps its next-new-message sequence back one, so the last message it handed out as new
//! goes out again with count 1 (nats-io/nats-server#5305, fixed in 2.10.14). Debian 12's 2.9.10 has it.
//!
//! So this process remembers, per consumer and stream sequence, the attempt it reported for each delivery until the
//! message is acked or dead-lettered, and a delivery that comes back with a count not above it is reported as the next
//! attempt: an attempt is never counted twice, so backoff and the dead-letter limit hold. Every driver of a consumer
//! on one backend shares the memory (a subscription stopped and started again keeps it); a new process knows only the
//! server's count.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Deliveries remembered per consumer; past it the lowest stream sequences (the oldest messages) are forgotten.
pub const REMEMBERED: usize = 65_536;

/// First nats-server release whose redeliveries never come back with a lower count.
const FIXED_IN: (u32, u32, u32) = (2, 10, 14);

/// Whether a server of this version (`2.9.10`, `v2.10.14-RC.1`) can under-count a redelivery; `None` if unreadable.
pub fn undercounts(version: &str) -> Option<bool> {
    let core = version.trim().trim_start_matches('v').split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    let v = (parts.next()??, parts.next()??, parts.next().flatten().unwrap_or(0));
    Some(v < FIXED_IN)
}

/// Says once, at connect, that the server is one whose counts tidings has to correct.
pub fn check_server(version: &str) {
    if undercounts(version) == Some(true) {
        tracing::warn!(
            server = version,
            "this nats-server can hand a redelivered message out again with delivery \
            count 1 (nats-io/nats-server#5305, fixed in 2.10.14): tidings corrects the attempt within this process, \
            but a message first handled by another process may be counted low; upgrade the server"
        );
    }
}

/// The floors of every consumer of one backend.
#[derive(Debug, Default)]
pub struct Floors(Mutex<HashMap<String, Arc<Floor>>>);

impl Floors {
    /// The floor of one consumer, shared by its drivers.
    pub fn of(&self, consumer: &str) -> Arc<Floor> {
        self.0.lock().unwrap().entry(consumer.to_string()).or_default().clone()
    }
}

/// The attempts reported for one consumer's unsettled deliveries, by stream sequence.
#[derive(Debug, Default)]
pub struct Floor(Mutex<BTreeMap<u64, u32>>);

impl Floor {
    /// The attempt of a delivery of stream sequence `seq` that the server counts as delivery `delivered`: that count,
    /// unless an earlier delivery of the message was reported at or above it; then the one after that.
    pub fn attempt(&self, seq: u64, delivered: u32) -> u32 {
        let mut seen = self.0.lock().unwrap();
        let attempt = match seen.get(&seq) {
            Some(&before) if before >= delivered => before.saturating_add(1),
            _ => delivered,
        };
        seen.insert(seq, attempt);
        while seen.len() > REMEMBERED {
            seen.pop_first();
        }
        attempt
    }

    /// Forgets messages that were acked or dead-lettered.
    pub fn settled(&self, seqs: impl IntoIterator<Item = u64>) {
        let mut seen = self.0.lock().unwrap();
        if seen.is_empty() {
            return;
        }
        for seq in seqs {
            seen.remove(&seq);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redelivery_that_comes_back_with_a_lower_count_is_the_next_attempt() {
        let f = Floor::default();
        assert_eq!(f.attempt(7, 1), 1, "first delivery");
        // The server's count went back to 1 (nats-server#5305): the handler already had attempt 1.
        assert_eq!(f.attempt(7, 1), 2);
        // Then the server's own redelivery, counted 3 by the server, is attempt 3 (not a second 2).
        assert_eq!(f.attempt(7, 2), 3);
        assert_eq!(f.attempt(7, 3), 4);
        // Counts that rise as they should pass through.
        assert_eq!(f.attempt(8, 1), 1);
        assert_eq!(f.attempt(8, 2), 2);
        assert_eq!(f.attempt(8, 5), 5);
    }

    #[test]
    fn settled_messages_are_forgotten_and_the_memory_is_bounded() {
        let f = Floor::default();
        f.attempt(1, 1);
        f.attempt(2, 1);
        f.settled([1]);
        assert_eq!(f.attempt(1, 1), 1, "an acked message delivered again is the server's count");
        assert_eq!(f.attempt(2, 1), 2);
        for seq in 10..10 + REMEMBERED as u64 + 5 {
            f.attempt(seq, 1);
        }
        assert_eq!(f.len(), REMEMBERED);
        assert_eq!(f.attempt(10 + REMEMBERED as u64, 1), 2, "the newest are kept");
    }

    #[test]
    fn servers_before_2_10_14_are_known_to_undercount() {
        assert_eq!(undercounts("2.9.10"), Some(true));
        assert_eq!(undercounts("v2.10.13"), Some(true));
        assert_eq!(undercounts("2.10.14"), Some(false));
        assert_eq!(undercounts("2.11.0-RC.1"), Some(false));
        assert_eq!(undercounts("2.12"), Some(false));
        assert_eq!(undercounts("unknown"), None);
    }

    #[test]
    fn the_drivers_of_one_consumer_share_its_floor() {
        let floors = Floors::default();
        floors.of("c").attempt(3, 1);
        assert_eq!(floors.of("c").attempt(3, 1), 2, "a restarted subscription keeps the memory");
        assert_eq!(floors.of("other").attempt(3, 1), 1, "another consumer's sequence 3 is its own");
    }
}
