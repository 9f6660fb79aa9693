//! Head-of-line blocking per ordering key, for an ordered topic on a backend that does not give it natively
//! ([`crate::Capabilities::ordering`] false): such a broker hands out a key's messages in order, but it also hands out
//! the key's next message while the previous one is still running or waiting for its retry. The [`Sequencer`] keeps
//! one message per key out at a time (handed to a handler, or retried and waiting for its redelivery); later ones of
//! the key are parked here in the order they arrived, their leases kept alive by the runtime, and the first of them is
//! released when the one out is acked or dead-lettered.
//!
//! It relies only on the driver contract: a key's messages arrive in the order the broker hands them out, a message
//! keeps its id across deliveries (so the id tells a redelivery from the key's next message), each delivery has its
//! own [`AckId`], and where the broker keeps an order of its own, a delivery carries its position
//! ([`ReceivedMessage::sequence`]). What arrives for a key that has a message out:
//! - the redelivery of the message out, while it waits for its retry: it goes out (the retry);
//! - a redelivery of the message out while its handler runs (its lease lapsed at the broker): it waits beside it, and
//!   is acked when that one is acked or dead-lettered, or nacked with the same delay when it is retried;
//! - a redelivery of a parked message: it takes the older delivery's place in the line; the older delivery is
//!   forgotten, not settled (the broker took it back already; a nack of it would bring yet another delivery, and an
//!   ack would settle the message unhandled);
//! - any other message: parked at the end of the key's line, or, where deliveries carry the broker's sequence, ahead
//!   of the parked ones that come later in it (a redelivery of an earlier message that another process held, say).
//!
//! A retried message whose redelivery does not come back within its delay plus two ack deadlines (another process
//! took it, or the broker let it go: too old, or delivered too often) is given up, and its key's next message is
//! released into [`Sequencer::take_ready`]. Messages without a key are not held.
//!
//! What it parks takes no handler slot, so the runtime bounds it: while [`Sequencer::saturated`] (at least
//! [`parked_limit`] parked, none released and no retried message awaited), no receive is made. A broker's own limit on
//! unsettled deliveries (JetStream's `MaxAckPending`) would count messages held for their due time or their retry's
//! backoff as well, and let those starve the due ones; this one counts only what waits here. A retried head's
//! redelivery is still received meanwhile (the receives go on while one is awaited), so the bound may be passed by
//! what those receives bring.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::settle::Outcome;
use crate::backend::{AckId, ReceivedMessage};
use crate::message::MessageId;

/// A held delivery, and when its lease last began (its arrival, or the last extension).
struct Held {
    msg: ReceivedMessage,
    leased_at: Instant,
}

/// One key's line: the message out, and what waits behind it.
struct Line {
    head: MessageId,
    /// `None` while the head's handler runs; once it was retried, until when its redelivery is awaited.
    awaited_until: Option<Instant>,
    /// A second delivery of the head that arrived while its handler ran.
    again: Option<Held>,
    parked: VecDeque<Held>,
}

#[derive(Default)]
struct State {
    lines: HashMap<Arc<str>, Line>,
    /// Released behind a given-up head, for the runtime's next receive.
    ready: VecDeque<Held>,
}

/// How an arrival was sorted.
#[derive(Debug)]
pub(super) enum Arrival {
    /// To hand to a handler now.
    Out(ReceivedMessage),
    /// Held behind its key.
    Held,
    /// Held in the place of an older delivery of the same message, which is forgotten.
    Replaced,
}

/// What follows the end of a delivery that was out.
#[derive(Debug, Default)]
pub(super) struct Finished {
    /// The key's next message, now out, and when its lease last began.
    pub(super) next: Option<(ReceivedMessage, Instant)>,
    /// A second delivery of the finished message: to ack with it, or to nack with its retry's delay.
    pub(super) again: Option<ReceivedMessage>,
}

/// How many deliveries a sequencer parks before the runtime stops receiving for it: ten per handler slot (a batch
/// handler's batches count by their messages), at least 1,000, as JetStream's `MaxAckPending` was before it became
/// unlimited.
pub(super) fn parked_limit(max_in_flight: usize) -> usize {
    max_in_flight.saturating_mul(10).max(1000)
}

/// The per-key sequencer of one running subscription.
pub(super) struct Sequencer {
    st: Mutex<State>,
    /// How long past its retry delay a retried message's redelivery is awaited.
    patience: Duration,
    /// Parked deliveries at which [`Sequencer::saturated`] says so.
    limit: usize,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.st.lock().unwrap();
        f.debug_struct("Sequencer").field("keys", &st.lines.len()).field("ready", &st.ready.len()).finish()
    }
}

impl Sequencer {
    /// A sequencer for a subscription with this ack deadline.
    pub(super) fn new(ack_deadline: Duration) -> Self {
        Self { st: Mutex::default(), patience: ack_deadline * 2, limit: parked_limit(0) }
    }

    /// The same, saturated at `limit` parked deliveries.
    pub(super) fn with_limit(self, limit: usize) -> Self {
        Self { limit: limit.max(1), ..self }
    }

    /// Whether the runtime should receive nothing more for now: at least the limit's worth of deliveries wait behind
    /// their keys, none is released for the next receive to take, and no retried message's redelivery is awaited
    /// (which only a receive brings).
    pub(super) fn saturated(&self) -> bool {
        let st = self.st.lock().unwrap();
        if !st.ready.is_empty() || st.lines.values().any(|l| l.awaited_until.is_some()) {
            return false;
        }
        let parked: usize = st.lines.values().map(|l| l.parked.len() + usize::from(l.again.is_some())).sum();
        parked >= self.limit
    }

    /// Sorts a delivery that arrived at `now`.
    pub(super) fn arrive(&self, m: ReceivedMessage, now: Instant) -> Arrival {
        let Some(key) = m.ordering_key.clone() else { return Arrival::Out(m) };
        let mut st = self.st.lock().unwrap();
        let Some(line) = st.lines.get_mut(&key) else {
            let line = Line { head: m.id.clone(), awaited_until: None, again: None, parked: VecDeque::new() };
            st.lines.insert(key, line);
            return Arrival::Out(m);
        };
        let held = Held { msg: m, leased_at: now };
        if line.head == held.msg.id {
            if line.awaited_until.take().is_some() {
                return Arrival::Out(held.msg); // the retry
            }
            return match line.again.replace(held) {
                Some(_) => Arrival::Replaced,
                None => Arrival::Held,
            };
        }
        if let Some(place) = line.parked.iter_mut().find(|p| p.msg.id == held.msg.id) {
            *place = held;
            return Arrival::Replaced;
        }
        let later = |p: &Held| matches!((held.msg.sequence, p.msg.sequence), (Some(new), Some(old)) if old > new);
        let at = line.parked.iter().position(later).unwrap_or(line.parked.len());
        line.parked.insert(at, held);
        Arrival::Held
    }

    /// The delivery of message `id` (key `key`) that was out ended with `outcome` at `now`: acked or dead-lettered
    /// releases the key's next message; retried keeps the key for the message's redelivery.
    pub(super) fn finished(&self, key: &str, id: &MessageId, outcome: Outcome, now: Instant) -> Finished {
        let mut st = self.st.lock().unwrap();
        let Some(line) = st.lines.get_mut(key).filter(|l| &l.head == id) else { return Finished::default() };
        let again = line.again.take().map(|h| h.msg);
        if let Outcome::Retried(delay) = outcome {
            line.awaited_until = Some(now + delay + self.patience);
            return Finished { next: None, again };
        }
        let next = Self::advance(&mut st, key);
        Finished { next: next.map(|h| (h.msg, h.leased_at)), again }
    }

    /// Makes the key's first parked message its head (out), or forgets the key when none is parked.
    fn advance(st: &mut State, key: &str) -> Option<Held> {
        let line = st.lines.get_mut(key)?;
        match line.parked.pop_front() {
            Some(next) => {
                (line.head, line.awaited_until) = (next.msg.id.clone(), None);
                Some(next)
            }
            None => {
                st.lines.remove(key);
                None
            }
        }
    }

    /// Gives up the retried messages whose redelivery is overdue at `now`: each key's next message goes to
    /// [`Sequencer::take_ready`]. Returns how many were given up.
    pub(super) fn give_up_overdue(&self, now: Instant) -> usize {
        let mut st = self.st.lock().unwrap();
        let overdue: Vec<Arc<str>> = st
            .lines
            .iter()
            .filter(|(_, l)| l.awaited_until.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &overdue {
            tracing::warn!(target: "tidings", key = %key, id = %st.lines[key].head,
                "a retried message of an ordered topic did not come back; releasing the next message of its key");
            if let Some(next) = Self::advance(&mut st, key) {
                st.ready.push_back(next);
            }
        }
        overdue.len()
    }

    /// Up to `max` released messages, now out, and the earliest time one's lease last began.
    pub(super) fn take_ready(&self, max: usize) -> (Vec<ReceivedMessage>, Option<Instant>) {
        let mut st = self.st.lock().unwrap();
        let n = st.ready.len().min(max);
        let taken: Vec<Held> = st.ready.drain(..n).collect();
        let since = taken.iter().map(|h| h.leased_at).min();
        (taken.into_iter().map(|h| h.msg).collect(), since)
    }

    /// The deliveries held here (parked, second deliveries, released ones), whose leases the runtime extends now: each
    /// one's lease is counted from `now`.
    pub(super) fn extend(&self, now: Instant) -> Vec<AckId> {
        let mut st = self.st.lock().unwrap();
        let st = &mut *st;
        let lines = st.lines.values_mut().flat_map(|l| l.again.iter_mut().chain(l.parked.iter_mut()));
        lines
            .chain(st.ready.iter_mut())
            .map(|h| {
                h.leased_at = now;
                h.msg.ack_id.clone()
            })
            .collect()
    }

    /// Everything held, taken (the subscription stops: it goes back to the broker); each key's line is forgotten.
    pub(super) fn drain(&self) -> Vec<ReceivedMessage> {
        let st = std::mem::take(&mut *self.st.lock().unwrap());
        let lines = st.lines.into_values().flat_map(|l| l.again.into_iter().chain(l.parked));
        lines.chain(st.ready).map(|h| h.msg).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn msg(token: u64, id: &str, key: &str) -> ReceivedMessage {
        ReceivedMessage::new(AckId::Num(token), MessageId::from(id), Default::default(), SystemTime::now(), 1)
            .with_ordering_key(Some(key.into()))
    }

    /// A delivery carrying the broker's sequence (the id and the token are the sequence too).
    fn seq(seq: u64, key: &str) -> ReceivedMessage {
        msg(seq, &seq.to_string(), key).with_sequence(Some(seq))
    }

    fn out(a: Arrival) -> Option<String> {
        match a {
            Arrival::Out(m) => Some(m.id.to_string()),
            _ => None,
        }
    }

    /// The id of the key's next message, once the message `id` that was out ended with `outcome`.
    fn next(s: &Sequencer, key: &str, id: &str, outcome: Outcome) -> Option<String> {
        s.finished(key, &id.into(), outcome, Instant::now()).next.map(|(m, _)| m.id.to_string())
    }

    fn ids(ms: &[ReceivedMessage]) -> Vec<String> {
        ms.iter().map(|m| m.id.to_string()).collect()
    }

    const DEADLINE: Duration = Duration::from_secs(10);

    /// Saturated at the limit's worth of parked deliveries (what is out does not count), unless a retried head's
    /// redelivery is awaited or a released message waits for the next receive; no longer once one is let out.
    #[test]
    fn saturated_at_the_parked_limit_unless_a_receive_is_wanted() {
        let (s, t) = (Sequencer::new(DEADLINE).with_limit(3), Instant::now());
        assert_eq!(parked_limit(5), 1000, "at least 1,000");
        assert_eq!(parked_limit(500), 5000, "ten per handler slot");
        assert!(!s.saturated(), "empty");
        assert_eq!(out(s.arrive(seq(1, "a"), t)).as_deref(), Some("1"));
        assert_eq!(out(s.arrive(seq(2, "b"), t)).as_deref(), Some("2"));
        for n in [3, 4] {
            assert!(out(s.arrive(seq(n, "a"), t)).is_none(), "parked");
        }
        assert!(!s.saturated(), "two parked of three");
        assert!(out(s.arrive(seq(5, "b"), t)).is_none());
        assert!(s.saturated(), "three parked");
        // b's head is retried: its redelivery only comes through a receive.
        s.finished("b", &"2".into(), Outcome::Retried(Duration::from_secs(1)), t);
        assert!(!s.saturated(), "a retried head's redelivery is awaited");
        assert_eq!(out(s.arrive(seq(2, "b"), t)).as_deref(), Some("2"), "the retry");
        assert!(s.saturated(), "the retry is out again");
        s.give_up_overdue(t); // nothing overdue
        assert_eq!(next(&s, "a", "1", Outcome::Acked).as_deref(), Some("3"));
        assert!(!s.saturated(), "one let out");
    }

    /// The assertions of the NATS driver's own sequencer (`backend-nats/src/order.rs`, which keyed it by stream
    /// sequence), on deliveries that carry the sequence.
    #[test]
    fn one_message_per_key_is_out_and_the_next_follows_in_stream_order() {
        let (s, t) = (Sequencer::new(DEADLINE), Instant::now());
        assert_eq!(out(s.arrive(seq(1, "a"), t)).as_deref(), Some("1"));
        assert_eq!(out(s.arrive(seq(2, "b"), t)).as_deref(), Some("2"), "another key is independent");
        assert!(matches!(s.arrive(seq(4, "a"), t), Arrival::Held));
        assert!(matches!(s.arrive(seq(3, "a"), t), Arrival::Held));
        let f = s.finished("a", &"1".into(), Outcome::Retried(Duration::from_millis(5)), t);
        assert!(f.next.is_none() && f.again.is_none(), "a retried head keeps its key");
        assert_eq!(out(s.arrive(seq(1, "a"), t)).as_deref(), Some("1"), "the head's redelivery goes out");
        assert!(s.take_ready(10).0.is_empty());
        assert_eq!(next(&s, "a", "1", Outcome::Acked).as_deref(), Some("3"), "stream order, not arrival order");
        assert_eq!(s.extend(t), vec![AckId::Num(4)], "4 still parked");
        assert_eq!(next(&s, "a", "3", Outcome::DeadLettered).as_deref(), Some("4"));
        assert!(s.finished("a", &"4".into(), Outcome::Acked, t).next.is_none());
        assert!(s.extend(t).is_empty(), "nothing held");
        assert_eq!(out(s.arrive(seq(5, "a"), t)).as_deref(), Some("5"), "the key is free again");
        let unkeyed = ReceivedMessage::new(AckId::Num(7), "7".into(), Default::default(), SystemTime::now(), 1);
        assert!(matches!(s.arrive(unkeyed, t), Arrival::Out(_)), "a message without a key is not held");
    }

    /// Without the broker's sequence (Pub/Sub), a key's messages wait in the order they arrived.
    #[test]
    fn without_a_sequence_the_next_follows_in_arrival_order() {
        let (s, t) = (Sequencer::new(DEADLINE), Instant::now());
        assert!(out(s.arrive(msg(1, "x", "a"), t)).is_some());
        assert!(matches!(s.arrive(msg(2, "z", "a"), t), Arrival::Held));
        assert!(matches!(s.arrive(msg(3, "y", "a"), t), Arrival::Held));
        assert_eq!(next(&s, "a", "x", Outcome::Acked).as_deref(), Some("z"));
        assert_eq!(next(&s, "a", "z", Outcome::Acked).as_deref(), Some("y"));
    }

    #[test]
    fn redeliveries_of_held_messages_keep_their_place() {
        let (s, t) = (Sequencer::new(DEADLINE), Instant::now());
        assert!(out(s.arrive(msg(1, "1", "a"), t)).is_some());
        assert!(matches!(s.arrive(msg(2, "2", "a"), t), Arrival::Held));
        assert!(matches!(s.arrive(msg(3, "3", "a"), t), Arrival::Held));
        // The broker takes 2 back and hands it out again: the new delivery keeps 2's place, ahead of 3.
        assert!(matches!(s.arrive(msg(12, "2", "a"), t), Arrival::Replaced));
        // The running head's lease lapsed and it came again: it waits beside it, not out.
        assert!(matches!(s.arrive(msg(11, "1", "a"), t), Arrival::Held));
        assert!(matches!(s.arrive(msg(21, "1", "a"), t), Arrival::Replaced));
        let mut held = s.extend(t);
        held.sort_by_key(|id| format!("{id:?}"));
        assert_eq!(held, vec![AckId::Num(12), AckId::Num(21), AckId::Num(3)]);
        let f = s.finished("a", &"1".into(), Outcome::Acked, t);
        assert_eq!(f.again.map(|m| m.ack_id), Some(AckId::Num(21)), "the second delivery is settled with it");
        let (two, _) = f.next.unwrap();
        assert_eq!((two.id.to_string(), two.ack_id), ("2".into(), AckId::Num(12)));
        assert_eq!(next(&s, "a", "2", Outcome::Acked).as_deref(), Some("3"));
    }

    #[test]
    fn an_overdue_retry_is_given_up_and_releases_its_key() {
        let (s, t) = (Sequencer::new(DEADLINE), Instant::now());
        assert!(out(s.arrive(msg(1, "1", "a"), t)).is_some());
        assert!(matches!(s.arrive(msg(2, "2", "a"), t), Arrival::Held));
        s.finished("a", &"1".into(), Outcome::Retried(Duration::from_secs(1)), t);
        assert_eq!(s.give_up_overdue(t + Duration::from_secs(20)), 0, "awaited for its delay plus two deadlines");
        assert_eq!(s.give_up_overdue(t + Duration::from_secs(21)), 1);
        let (ready, since) = s.take_ready(10);
        assert_eq!((ids(&ready), since), (vec!["2".to_string()], Some(t)));
        // The given-up message, should it come back after all, waits behind the key's new head.
        assert!(matches!(s.arrive(msg(3, "1", "a"), t), Arrival::Held));
        let left = s.drain();
        assert_eq!(ids(&left), vec!["1"]);
        assert!(s.extend(t).is_empty(), "drained");
    }
}
