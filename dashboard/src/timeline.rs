//! A message's timeline: what the backends and this dashboard can tell about one message id. The dead-letter
//! queues keep the publish time, the number of attempts, the time and reason of dead-lettering; this dashboard
//! remembers those of each message it redrove or purged (the queue forgets them once the message leaves it) and the
//! action itself. No backend keeps each attempt's time, nor acked messages, so neither shows.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tidings_core::admin::Operator;
use tidings_core::{DeadLetter, Result};

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When, milliseconds since the epoch; `None` where the backend keeps no time.
    pub at_ms: Option<u64>,
    /// `published`, `attempts`, `dead-lettered`, `redriven`, `purged` (or `redrive failed`, `purge failed`).
    pub what: &'static str,
    /// `topic/subscription` (for `published`: the subscription whose dead letter told it).
    pub subscription: String,
    /// Details (the reason, the number of attempts, the action's outcome).
    pub detail: String,
}

/// The events of one message, oldest first, and what cannot be told.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// The message id.
    pub id: String,
    /// Events.
    pub events: Vec<Event>,
    /// What no backend keeps.
    pub unknown: Vec<&'static str>,
}

/// An event with its place: (the publish first, then by time; an attempt count sits at its dead-lettering's time,
/// before it, and an action after what it acted on).
type Placed = ((bool, u64, u8), Event);

/// What this dashboard remembers of the messages it acted on, by message id.
#[derive(Debug, Default)]
pub(crate) struct History {
    by_id: Mutex<BTreeMap<String, Vec<Placed>>>,
}

impl History {
    /// Remembers `d` as it was in the dead-letter queue of `subscription`, and the action (`redriven`, `purged`) made
    /// on it with its outcome.
    pub(crate) fn record(&self, d: &DeadLetter, subscription: &str, action: &'static str, outcome: &str) {
        let now = millis(SystemTime::now());
        let mut events = facts(d, subscription);
        events.push((
            (true, now, 2),
            Event { at_ms: Some(now), what: action, subscription: subscription.into(), detail: outcome.into() },
        ));
        self.by_id.lock().unwrap().entry(d.id.to_string()).or_default().extend(events);
    }

    fn of(&self, id: &str) -> Vec<Placed> {
        self.by_id.lock().unwrap().get(id).cloned().unwrap_or_default()
    }
}

/// What a dead letter of `subscription` tells: its publish, its attempts and its dead-lettering.
fn facts(d: &DeadLetter, subscription: &str) -> Vec<Placed> {
    let dead = millis(d.dead_lettered_at);
    let published = millis(d.publish_time);
    let event = |at_ms, what, detail| Event { at_ms, what, subscription: subscription.to_string(), detail };
    vec![
        ((false, published, 0), event(Some(published), "published", String::new())),
        (
            (true, dead, 0),
            event(None, "attempts", format!("{} attempt(s), each failed (their times are not kept)", d.attempts)),
        ),
        ((true, dead, 1), event(Some(dead), "dead-lettered", d.reason.clone())),
    ]
}

pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Most dead letters read per subscription while searching.
const READ_MAX: usize = 10_000;

/// The timeline of `id`: `None` where neither a dead-letter queue nor this dashboard knows it.
pub(crate) async fn of(op: &Operator, history: &History, id: &str) -> Result<Option<Timeline>> {
    let mut placed = history.of(id);
    for (topic, sub) in op.subscription_names().await? {
        let name = format!("{topic}/{sub}");
        for d in op.dead_letters(&topic, &sub, READ_MAX).await?.into_iter().filter(|d| d.id.to_string() == id) {
            placed.extend(facts(&d, &name));
        }
    }
    Ok(assemble(id, placed))
}

fn assemble(id: &str, mut placed: Vec<Placed>) -> Option<Timeline> {
    if placed.is_empty() {
        return None;
    }
    placed.sort_by_key(|a| a.0);
    let mut events: Vec<Event> = Vec::new();
    for (_, e) in placed {
        // The publish once (the earliest); a fact read twice (remembered, and still in a queue) once.
        let repeated =
            if e.what == "published" { events.iter().any(|x| x.what == "published") } else { events.contains(&e) };
        if !repeated {
            events.push(e);
        }
    }
    Some(Timeline {
        id: id.to_string(),
        events,
        unknown: vec![
            "each attempt's time: backends keep the count of attempts only",
            "acked messages: no backend keeps them, so a message handled without dead-lettering has no timeline here, \
             and a redriven one shows no step after its redrive unless it is dead-lettered again",
            "redrives and purges made elsewhere (the CLI, another dashboard): only this dashboard's own are remembered",
        ],
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tidings_core::MessageId;

    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn what(t: &Timeline) -> Vec<&str> {
        t.events.iter().map(|e| e.what).collect()
    }

    #[test]
    fn a_redriven_message_keeps_its_publish_attempts_and_dead_lettering() {
        let id = MessageId::generate();
        let d = DeadLetter::new(id.clone(), Bytes::from_static(b"{}"), at(1_000), 3, "boom", at(5_000));
        let history = History::default();
        history.record(&d, "orders/billing", "redriven", "3 message(s) moved");
        // The queue no longer has it: only what was remembered tells.
        let t = assemble(&id.to_string(), history.of(&id.to_string())).unwrap();
        assert_eq!(what(&t), ["published", "attempts", "dead-lettered", "redriven"]);
        assert_eq!(t.events[0].at_ms, Some(1_000));
        assert_eq!(t.events[1].detail, "3 attempt(s), each failed (their times are not kept)");
        assert_eq!((t.events[2].at_ms, t.events[2].detail.as_str()), (Some(5_000), "boom"));
        assert_eq!(t.events[3].detail, "3 message(s) moved");
    }

    #[test]
    fn a_message_dead_lettered_again_after_a_redrive_shows_both_rounds_in_order() {
        let id = MessageId::generate();
        let first = DeadLetter::new(id.clone(), Bytes::new(), at(1_000), 2, "first", at(5_000));
        let history = History::default();
        history.record(&first, "orders/billing", "redriven", "moved");
        let mut placed = history.of(&id.to_string());
        // Back in the queue later, with the same publish time, read beside what was remembered.
        let now = millis(SystemTime::now());
        let again = DeadLetter::new(id.clone(), Bytes::new(), at(1_000), 1, "second", at(now + 60_000));
        placed.extend(facts(&again, "orders/billing"));
        // A failed redrive leaves the message in the queue: the same facts twice show once.
        placed.extend(facts(&first, "orders/billing"));
        let t = assemble(&id.to_string(), placed).unwrap();
        assert_eq!(what(&t), ["published", "attempts", "dead-lettered", "redriven", "attempts", "dead-lettered"]);
        assert_eq!(t.events[2].detail, "first");
        assert_eq!(t.events[5].detail, "second");
    }

    #[test]
    fn an_unknown_message_has_no_timeline() {
        assert!(assemble("nope", History::default().of("nope")).is_none());
    }
}
