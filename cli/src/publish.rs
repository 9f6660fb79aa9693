//! `tidings publish <topic> --data JSON|@file [--attr k=v] [--key K] [--id ID]`.

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
