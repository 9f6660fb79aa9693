//! `tidings ls`: topics and subscriptions under the prefix, with figures (the backlog with its scheduled messages
//! apart: published with a due time not reached yet); `–` and a footnote where the backend cannot tell; `MISSING` and a footnote naming the resource where a subscription's resource is gone, and the
//! resources deleted subscriptions left behind. It exits 0 whenever it could list (`tidings doctor` fails on those).

use tidings::admin::Operator;

use crate::exit::Outcome;
use crate::table::{self, count, UNKNOWN};

/// The mark of a subscription whose resource (its queue, dead-letter queue, ...) is gone.
const MISSING: &str = "MISSING";

pub async fn run(op: &Operator, json: bool) -> Outcome {
    let inv = op.inventory().await?;
    if json {
        table::json(&inv);
        return Ok(());
    }
    let mut rows = Vec::new();
    for t in &inv.topics {
        let kind = match (t.delivery, t.ordered) {
            (Some(tidings::topology::Delivery::ExactlyOnce), Some(true)) => "exactly-once, ordered",
            (Some(tidings::topology::Delivery::ExactlyOnce), _) => "exactly-once",
            (Some(_), Some(true)) => "ordered",
            (Some(_), _) => "at-least-once",
            (None, _) => UNKNOWN,
        };
        if t.subscriptions.is_empty() {
            rows.push(vec![
                t.name.clone(),
                kind.into(),
                "(none)".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for s in &t.subscriptions {
            if s.missing.is_some() {
                let cells = [MISSING, "", "", "", ""].map(String::from);
                rows.push([vec![t.name.clone(), kind.into(), s.name.clone()], cells.to_vec()].concat());
                continue;
            }
            rows.push(vec![
                t.name.clone(),
                kind.into(),
                s.name.clone(),
                count(s.stats.backlog),
                count(s.stats.scheduled),
                count(s.stats.in_flight),
                s.stats.oldest_unacked.map_or_else(|| UNKNOWN.to_string(), table::age),
                count(s.stats.dead_letters),
            ]);
        }
    }
    println!("backend {}, name prefix {:?}", inv.backend, inv.name_prefix);
    if rows.is_empty() {
        println!("no topics under this prefix");
    } else {
        let head = ["TOPIC", "DELIVERY", "SUBSCRIPTION", "BACKLOG", "SCHEDULED", "IN FLIGHT", "OLDEST UNACKED", "DLQ"];
        table::print(&head, &rows);
    }
    for u in &inv.unknown {
        println!("{UNKNOWN} {}: {}", u.field.replace('_', " "), u.reason);
    }
    for t in &inv.topics {
        for s in t.subscriptions.iter().filter_map(|s| s.missing.as_ref().map(|m| (s, m))) {
            println!("{MISSING} {}/{}: {}", t.name, s.0.name, s.1);
        }
    }
    for o in &inv.orphans {
        println!("orphaned: {}", o.describe());
    }
    Ok(())
}
