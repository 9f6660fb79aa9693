//! A message's timeline: what the backends and this dashboard can tell about one message id. The dead-letter
//! queues keep the publish time, the number of attempts, the time and reason of dead-lettering; this dashboard
//! remembers the redrives it made. No backend keeps each attempt's time, nor acked messages, so neither shows.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tidings_core::admin::Operator;
use tidings_core::Result;

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When, milliseconds since the epoch; `None` where the backend keeps no time.
    pub at_ms: Option<u64>,
    /// `published`, `attempts`, `dead-lettered`, `redriven`.
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

/// Redrives this dashboard made, by message id.
#[derive(Debug, Default)]
pub(crate) struct Redriven {
    by_id: Mutex<BTreeMap<String, Vec<Event>>>,
}

impl Redriven {
    pub(crate) fn record(&self, id: String, subscription: &str, outcome: &str) {
        let e = Event {
            at_ms: Some(millis(SystemTime::now())),
            what: "redriven",
            subscription: subscription.into(),
            detail: outcome.into(),
        };
        self.by_id.lock().unwrap().entry(id).or_default().push(e);
    }
}

pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Most dead letters read per subscription while searching.
const READ_MAX: usize = 10_000;

/// The timeline of `id`: `None` where neither a dead-letter queue nor this dashboard knows it.
pub(crate) async fn of(op: &Operator, redriven: &Redriven, id: &str) -> Result<Option<Timeline>> {
    let mut events = Vec::new();
    for (topic, sub) in op.subscription_names().await? {
        let name = format!("{topic}/{sub}");
        for d in op.dead_letters(&topic, &sub, READ_MAX).await?.into_iter().filter(|d| d.id.to_string() == id) {
            events.push(Event {
                at_ms: Some(millis(d.publish_time)),
                what: "published",
                subscription: name.clone(),
                detail: String::new(),
            });
            events.push(Event {
                at_ms: None,
                what: "attempts",
                subscription: name.clone(),
                detail: format!("{} attempt(s), each failed (their times are not kept)", d.attempts),
            });
            events.push(Event {
                at_ms: Some(millis(d.dead_lettered_at)),
                what: "dead-lettered",
                subscription: name.clone(),
                detail: d.reason.clone(),
            });
        }
    }
    events.extend(redriven.by_id.lock().unwrap().get(id).cloned().unwrap_or_default());
    if events.is_empty() {
        return Ok(None);
    }
    // The publish time once (the earliest), then the rest in time order (attempt counts before their dead-lettering).
    events.sort_by_key(|e| (e.what != "published", e.at_ms.unwrap_or(0), e.what == "dead-lettered"));
    let mut seen_published = false;
    events.retain(|e| e.what != "published" || !std::mem::replace(&mut seen_published, true));
    Ok(Some(Timeline {
        id: id.to_string(),
        events,
        unknown: vec![
            "each attempt's time: backends keep the count of attempts only",
            "acked messages: no backend keeps them, so a message handled without dead-lettering has no timeline here",
            "redrives made elsewhere (the CLI, another dashboard): only this dashboard's own are remembered",
        ],
    }))
}
