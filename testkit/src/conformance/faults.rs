//! Network faults between tidings and a broker, injected by a [`FaultProxy`](super::proxy::FaultProxy): connections
//! reset mid-stream, a 3 s cut and added latency, for publishers and the subscriber at once. tidings retries
//! transient errors, resumes when the network returns, and no message is lost; a publish that finally fails returns
//! an error to its caller, who publishes it again (so a message may arrive twice, as at-least-once allows).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::proxy::FaultProxy;
use tidings_core::{Bus, Message, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u64,
}

/// What [`network_faults`] saw.
#[derive(Debug, Clone)]
pub struct FaultReport {
    /// Publishes that returned an error and were published again by the caller.
    pub failed_publishes: u64,
    /// Distinct messages delivered.
    pub delivered: usize,
    /// Deliveries beyond the first of a message.
    pub duplicates: u32,
    /// Connections the proxy forwarded (each reset or cut forces new ones).
    pub connections: u64,
    /// Seconds from the end of the faults until the last missing message arrived.
    pub recovery_secs: f64,
    /// Messages never delivered within `patience` after the faults ended (must be empty).
    pub missing: Vec<u64>,
}

/// Publishes `count` messages from 4 publishers with a subscriber running, on a bus whose backend talks to the broker
/// through `proxy`, while the proxy resets every connection, cuts the network for 3 s, adds 150 ms latency, and
/// resets again. Waits up to `patience` after the faults for every message to arrive and prints one `FAULTS` line.
pub async fn network_faults(
    bus: &Bus,
    proxy: &FaultProxy,
    backend: &str,
    count: u64,
    ack_deadline: Duration,
    patience: Duration,
) -> FaultReport {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let topic =
        Topic::<Job>::new(Box::leak(format!("faults-{}", &id[22..]).into_boxed_str()), TopicConfig::at_least_once());
    let seen: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let s = seen.clone();
    let cfg = SubscriptionConfig::DEFAULT
        .with_ack_deadline(ack_deadline)
        .with_retry(RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(2)));
    bus.subscribe(&topic, "sub", cfg, move |m: Message<Job>| {
        *s.lock().unwrap().entry(m.n).or_default() += 1;
        async { Ok(()) }
    })
    .await
    .expect("subscribe through the proxy");

    let failed = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for w in 0..4u64 {
        let (bus, topic, failed) = (bus.clone(), Topic::<Job>::new(topic.name(), topic.config()), failed.clone());
        publishers.push(tokio::spawn(async move {
            for n in (w..count).step_by(4) {
                // The caller's side of "a publish that finally fails returns an error": publish again.
                while topic.publish(&bus, &Job { n }).await.is_err() {
                    failed.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
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
        p.await.expect("publisher task");
    }
    let all: BTreeSet<u64> = (0..count).collect();
    let faults_over = tokio::time::Instant::now();
    let end = tokio::time::Instant::now() + patience;
    while seen.lock().unwrap().keys().copied().collect::<BTreeSet<_>>() != all && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let report = FaultReport {
        failed_publishes: failed.load(SeqCst),
        delivered: seen.len(),
        duplicates: seen.values().map(|c| c - 1).sum(),
        connections: proxy.connections.load(SeqCst),
        recovery_secs: faults_over.elapsed().as_secs_f64(),
        missing: all.iter().filter(|n| !seen.contains_key(n)).copied().collect(),
    };
    eprintln!(
        "FAULTS backend={backend} messages={count} resets=2 cut_seconds=3 delay_ms=150 \
         failed_publishes_retried_by_caller={} delivered={} duplicates={} connections={} recovery_secs={:.1}",
        report.failed_publishes, report.delivered, report.duplicates, report.connections, report.recovery_secs
    );
    report
}
