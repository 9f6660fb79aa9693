//! Network faults between tidings and LocalStack, injected by a TCP proxy: connections reset mid-stream, a 3 s cut,
//! and added latency, for publishers and subscribers at once. tidings retries transient errors, resumes when the
//! network returns, and no message is lost; a publish that finally fails returns an error to its caller, who publishes
//! it again (so a message may arrive twice, as at-least-once allows).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use serde::{Deserialize, Serialize};
use support::proxy::FaultProxy;
use tidings_aws::AwsBackend;
use tidings_core::{Bus, Message, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u64,
}

const COUNT: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_cuts_and_latency_lose_nothing() {
    let _ = support::sdk().await; // LocalStack is up (or a clear panic)
    let target = support::endpoint().trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start(target).await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{}", proxy.addr))
        .credentials_provider(Credentials::new("test", "test", None, None, "tidings-tests"))
        .load()
        .await;
    let backend = AwsBackend::with_sdk_config(&sdk, support::config()).unwrap();
    let bus = Bus::new(Arc::new(backend));
    let id = uuid::Uuid::now_v7().simple().to_string();
    let topic =
        Topic::<Job>::new(Box::leak(format!("faults-{}", &id[22..]).into_boxed_str()), TopicConfig::at_least_once());
    let seen: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let s = seen.clone();
    let cfg = SubscriptionConfig::DEFAULT
        .with_ack_deadline(Duration::from_secs(5))
        .with_retry(RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(2)));
    bus.subscribe(&topic, "sub", cfg, move |m: Message<Job>| {
        *s.lock().unwrap().entry(m.n).or_default() += 1;
        async { Ok(()) }
    })
    .await
    .unwrap();

    let failed_publishes = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for w in 0..4u64 {
        let (bus, topic, failed) =
            (bus.clone(), Topic::<Job>::new(topic.name(), topic.config()), failed_publishes.clone());
        publishers.push(tokio::spawn(async move {
            for n in (w..COUNT).step_by(4) {
                // The caller's side of "a publish that finally fails returns an error": publish again.
                while topic.publish(&bus, &Job { n }).await.is_err() {
                    failed.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    // Faults while publishers and the subscriber run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.reset_all();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.delay(Duration::from_millis(150));
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.delay(Duration::ZERO);
    proxy.reset_all();
    for p in publishers {
        p.await.unwrap();
    }
    let all: BTreeSet<u64> = (0..COUNT).collect();
    let end = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.lock().unwrap().keys().copied().collect::<BTreeSet<_>>() != all && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "FAULTS backend=aws messages={COUNT} resets=2 cut_seconds=3 delay_ms=150 failed_publishes_retried_by_caller={} \
         delivered={} duplicates={duplicates} connections={}",
        failed_publishes.load(SeqCst),
        seen.len(),
        proxy.connections.load(SeqCst)
    );
    let missing: Vec<u64> = all.iter().filter(|n| !seen.contains_key(n)).copied().collect();
    assert!(missing.is_empty(), "lost after the network returned: {missing:?}");
    bus.shutdown(Duration::from_secs(5)).await;
}
