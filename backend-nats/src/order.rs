//! Head-of-line blocking per ordering key, client-side: a consumer hands out messages in stream order, but it would
//! hand out a key's next message while the previous one is still running or waiting for its retry. So one message
//! per key is out at a time (handed to a handler, or nacked and waiting for its redelivery); later ones of the key are
//! parked here, leases kept alive, and released in stream order when it is acked or dead-lettered.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use tidings_core::backend::ReceivedMessage;

/// One key's state: the stream sequence that holds it, and what waits behind it.
#[derive(Default)]
struct Key {
    head: u64,
    parked: BTreeMap<u64, ReceivedMessage>,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Key>,
    /// Stream sequence of each head to its key.
    heads: HashMap<u64, String>,
    /// Released from parking, to hand out on the next receive.
    ready: VecDeque<ReceivedMessage>,
}

/// The per-key sequencer of one ordered subscription.
#[derive(Default)]
pub struct Sequencer {
    st: Mutex<State>,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.st.lock().unwrap();
        f.debug_struct("Sequencer").field("keys", &st.keys.len()).field("ready", &st.ready.len()).finish()
    }
}

impl Sequencer {
    /// Sorts a delivery with stream sequence `seq`: `Some` to hand out now, `None` when parked behind its key.
    pub fn arrive(&self, seq: u64, m: ReceivedMessage) -> Option<ReceivedMessage> {
        let Some(key) = m.ordering_key.as_deref().map(str::to_string) else { return Some(m) };
        let mut st = self.st.lock().unwrap();
        let st = &mut *st;
        match st.keys.get_mut(&key) {
            None => {
                st.keys.insert(key.clone(), Key { head: seq, parked: BTreeMap::new() });
                st.heads.insert(seq, key);
                Some(m)
            }
            Some(k) if k.head == seq => Some(m), // the head again: redelivered after a nack or a lost lease
            Some(k) if seq < k.head => {
                // An earlier message of the key than the one out (another process held it, and its lease ran out):
                // it goes first; the one that was out waits behind it when it comes back.
                st.heads.remove(&k.head);
                k.head = seq;
                st.heads.insert(seq, key);
                Some(m)
            }
            Some(k) => {
                k.parked.insert(seq, m); // a newer delivery of a parked message replaces the old one
                None
            }
        }
    }

    /// The delivery with stream sequence `seq` was acked or dead-lettered: its key's next message is released.
    pub fn done(&self, seq: u64) {
        let mut st = self.st.lock().unwrap();
        let st = &mut *st;
        let Some(key) = st.heads.remove(&seq) else { return };
        let Some(k) = st.keys.get_mut(&key) else { return };
        match k.parked.pop_first() {
            Some((next, m)) => {
                k.head = next;
                st.heads.insert(next, key);
                st.ready.push_back(m);
            }
            None => {
                st.keys.remove(&key);
            }
        }
    }

    /// Up to `max` released messages.
    pub fn take_ready(&self, max: usize) -> Vec<ReceivedMessage> {
        let mut st = self.st.lock().unwrap();
        let n = st.ready.len().min(max);
        st.ready.drain(..n).collect()
    }

    /// Whether anything is parked or released (receives then poll briefly, to hand released messages out soon).
    pub fn is_holding(&self) -> bool {
        let st = self.st.lock().unwrap();
        !st.ready.is_empty() || st.keys.values().any(|k| !k.parked.is_empty())
    }

    /// The ack ids of parked and released messages, whose leases the subscription keeps alive.
    pub fn held(&self) -> Vec<tidings_core::backend::AckId> {
        let st = self.st.lock().unwrap();
        let parked = st.keys.values().flat_map(|k| k.parked.values());
        parked.chain(st.ready.iter()).map(|m| m.ack_id.clone()).collect()
    }

    /// Forgets everything (the subscription's runner stopped: what was held comes back after its ack wait).
    pub fn clear(&self) {
        *self.st.lock().unwrap() = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;
    use tidings_core::backend::AckId;
    use tidings_core::MessageId;

    fn msg(seq: u64, key: &str) -> ReceivedMessage {
        ReceivedMessage::new(
            AckId::Num(seq),
            MessageId::from(seq.to_string()),
            Default::default(),
            SystemTime::now(),
            1,
        )
        .with_ordering_key(Some(key.into()))
    }

    #[test]
    fn one_message_per_key_is_out_and_the_next_follows_in_stream_order() {
        let s = Sequencer::default();
        assert!(s.arrive(1, msg(1, "a")).is_some());
        assert!(s.arrive(2, msg(2, "b")).is_some(), "another key is independent");
        assert!(s.arrive(4, msg(4, "a")).is_none());
        assert!(s.arrive(3, msg(3, "a")).is_none());
        assert!(s.arrive(1, msg(1, "a")).is_some(), "the head's redelivery goes out");
        assert!(s.take_ready(10).is_empty());
        s.done(1);
        let r = s.take_ready(10);
        assert_eq!(r.iter().map(|m| m.id.to_string()).collect::<Vec<_>>(), vec!["3"]);
        assert!(s.is_holding(), "4 still parked");
        s.done(3);
        assert_eq!(s.take_ready(10)[0].id.to_string(), "4");
        s.done(4);
        assert!(!s.is_holding());
        assert!(s.arrive(5, msg(5, "a")).is_some(), "the key is free again");
    }
}
