//! `tidings tail <topic>`: a temporary subscription (`tail-<random>`) that prints each message, removed on exit,
//! Ctrl-C and SIGTERM included.

use std::time::Duration;

use serde_json::Value;
use tidings::admin::Operator;
use tidings::{Bus, Message, SubscriptionConfig};
use tokio::sync::mpsc;

use crate::args::Tail;
use crate::exit::Outcome;
use crate::publish::declare;
use crate::table;

pub async fn run(bus: &Bus, op: &Operator, a: Tail, json: bool) -> Outcome {
    let config = op.topic_config(&a.topic).await?;
    let topic = declare(&a.topic, config);
    let name = format!("tail-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let sub_config = SubscriptionConfig::default().with_max_retries(0).with_max_concurrency(1);
    let spec = bus.subscription_spec(topic, &name, sub_config);
    let (tx, mut rx) = mpsc::unbounded_channel::<Message<Value>>();
    let subscribed = bus
        .subscribe(topic, &name, sub_config, move |m: Message<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(m);
                Ok(())
            }
        })
        .await;
    let sub = match subscribed {
        Ok(s) => s,
        Err(e) => {
            // Whatever was created before the failure goes too.
            let _ = op.delete_subscription(&spec).await;
            return Err(e.into());
        }
    };
    eprintln!("tailing {} through temporary subscription {name} (removed on exit; Ctrl-C stops)", a.topic);
    let mut seen = 0u64;
    let interrupted = crate::signal::interrupted();
    tokio::pin!(interrupted);
    while a.count.is_none_or(|n| seen < n) {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else { break };
                seen += 1;
                print(&m, json);
            }
            _ = &mut interrupted => break,
        }
    }
    sub.shutdown(Duration::from_secs(5)).await;
    let removed = op.delete_subscription(&spec).await;
    match &removed {
        Ok(()) => eprintln!("removed temporary subscription {name} after {seen} message(s)"),
        Err(e) => eprintln!("could not remove temporary subscription {name}: {e}"),
    }
    Ok(removed?)
}

fn print(m: &Message<Value>, json: bool) {
    if json {
        let line = serde_json::json!({
            "id": m.id().to_string(),
            "published_at": table::rfc3339(m.meta.publish_time),
            "attempt": m.attempt(),
            "attributes": m.meta.attributes,
            "ordering_key": m.meta.ordering_key,
            "payload": m.payload,
        });
        println!("{line}");
    } else {
        let attrs: Vec<String> = m.meta.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = m.meta.ordering_key.as_deref().map(|k| format!(" key={k}")).unwrap_or_default();
        println!("{} {} [{}]{key} {}", table::rfc3339(m.meta.publish_time), m.id(), attrs.join(" "), m.payload);
    }
}
