//! AWS API calls per 1,000 messages published and consumed at steady load, and messages/s, against LocalStack.
//!
//! Run: `scripts/localstack start && env $(scripts/localstack env) cargo bench -p tidings-aws --bench calls`
//! (`-- --messages N` to change the count). Prints one JSON object.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tidings_aws::{AwsBackend, AwsConfig};
use tidings_core::{Bus, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};

#[derive(Serialize, Deserialize)]
struct Event {
    n: u64,
    email: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 =
        args.iter().position(|a| a == "--messages").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(1000);
    let backend = AwsBackend::new({
        let mut c = AwsConfig::default();
        c.region = Some("us-east-1".into());
        c
    })
    .await
    .unwrap();
    let bus = Bus::new(Arc::new(backend.clone()));
    let id = uuid::Uuid::now_v7().simple().to_string();
    let topic: Topic<Event> =
        Topic::new(Box::leak(format!("bench-{}", &id[20..]).into_boxed_str()), TopicConfig::at_least_once());
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let sub = bus
        .subscribe(&topic, "calls", SubscriptionConfig::default(), move |_m: Message<Event>| {
            d.fetch_add(1, SeqCst);
            async { Ok(()) }
        })
        .await
        .unwrap();
    let before = backend.api_calls().snapshot();
    let start = Instant::now();
    // 20 concurrent publishers, as request handlers of a service would publish.
    let mut tasks = Vec::new();
    for w in 0..20u64 {
        let (bus, topic) = (bus.clone(), Topic::<Event>::new(topic.name(), topic.config()));
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(20) {
                let e = Event { n: i, email: format!("user{i}@example.com") };
                topic.publish_with(&bus, &e, PublishOptions::new().attribute("source", "bench")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let published = start.elapsed();
    while done.load(SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    sub.shutdown(Duration::from_secs(5)).await;
    let after = backend.api_calls().snapshot();
    let delta = |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    let per_k = |c: u64| c as f64 * 1000.0 / n as f64;
    let ops = ["sns:PublishBatch", "sqs:ReceiveMessage", "sqs:DeleteMessageBatch", "sqs:ChangeMessageVisibilityBatch"];
    let total: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
    let fields: Vec<String> =
        ops.iter().map(|op| format!("\"{}_per_1000\":{:.1}", op.replace(':', "_"), per_k(delta(op)))).collect();
    println!(
        "{{\"bench\":\"aws_calls\",\"messages\":{n},{},\"api_calls_per_1000\":{:.1},\"publish_msgs_per_s\":{:.0},\"end_to_end_msgs_per_s\":{:.0}}}",
        fields.join(","),
        per_k(total),
        n as f64 / published.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
}
