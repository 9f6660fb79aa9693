//! `tidings publish <topic> --data JSON|@file [--attr k=v] [--key K] [--id ID] [--delay 10m | --at RFC3339]`.

use std::io::Read;

use serde_json::Value;
use tidings::admin::Operator;
use tidings::{Bus, MessageId, PublishOptions, Topic};

use crate::args::Publish;
use crate::exit::{Failure, Outcome, USAGE};
use crate::table;

/// A topic declaration for a name known only at run time (the CLI lives for one command).
pub fn declare(name: &str, config: tidings::TopicConfig) -> &'static Topic<Value> {
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    Box::leak(Box::new(Topic::new(name, config)))
}

fn payload(data: &str) -> Result<Value, Failure> {
    let text = match data.strip_prefix('@') {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| Failure::new(USAGE, format!("--data @-: {e}")))?;
            s
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::new(USAGE, format!("--data @{path}: cannot read the file: {e}")))?,
        None => data.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| Failure::new(USAGE, format!("--data is not valid JSON: {e}")))
}

pub async fn run(bus: &Bus, op: &Operator, a: Publish, json: bool) -> Outcome {
    let value = payload(&a.data)?;
    let mut options = PublishOptions::new();
    for kv in &a.attrs {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Failure::new(USAGE, format!("--attr {kv:?} is invalid: write it as key=value")))?;
        options = options.attribute(k, v);
    }
    if let Some(k) = &a.key {
        options = options.ordering_key(k);
    }
    if let Some(id) = &a.id {
        options = options.id(MessageId::from(id.as_str()));
    }
    if let Some(d) = &a.delay {
        let delay = humantime::parse_duration(d.trim()).map_err(|e| {
            Failure::new(USAGE, format!("--delay {d:?} is not a duration (write it as 10m, 1h30m or 45s): {e}"))
        })?;
        options = options.deliver_after(delay);
    }
    if let Some(t) = &a.at {
        let at = humantime::parse_rfc3339_weak(t.trim().trim_end_matches('Z')).map_err(|e| {
            Failure::new(
                USAGE,
                format!("--at {t:?} is not a time (write it in RFC 3339, UTC: 2025-06-01T09:00:00Z): {e}"),
            )
        })?;
        options = options.deliver_at(at);
    }
    let config = op.topic_config(&a.topic).await?;
    let topic = declare(&a.topic, config);
    let id = topic.publish_with(bus, &value, options).await?;
    if json {
        table::json(&serde_json::json!({ "topic": a.topic, "id": id.to_string() }));
    } else {
        println!("published {id} to {}", a.topic);
    }
    Ok(())
}
