//! `Bus::topology` and the operator view (`tidings::admin::Operator`) on the in-memory bus, where it works through
//! the subscriptions running on the bus itself (what the embedded dashboard uses).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::admin::{Operator, Pace};
use tidings::{HandlerError, Message, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    n: u32,
}

static ORDERS: Topic<Order> = Topic::new("orders", TopicConfig::exactly_once().ordered());

#[tokio::test]
async fn topology_lists_declared_topics_and_running_subscriptions_with_their_settings() {
    let bus = tidings::local();
    let config = SubscriptionConfig::default().with_max_retries(3).with_ack_deadline(Duration::from_secs(45));
    let _s = bus.subscribe(&ORDERS, "billing", config, |_m: Message<Order>| async { Ok(()) }).await.unwrap();
    let t = bus.topology();
    let json = serde_json::to_value(&t).unwrap();
    assert_eq!(json["backend"], "local");
    assert_eq!(json["topics"][0]["name"], "orders");
    assert_eq!(json["topics"][0]["delivery"], "exactly-once");
    assert_eq!(json["topics"][0]["ordered"], true);
    let sub = &json["topics"][0]["subscriptions"][0];
    assert_eq!((sub["name"].as_str(), sub["resource"].as_str()), (Some("billing"), Some("orders--billing")));
    assert_eq!((sub["ack_deadline"].as_str(), sub["max_retries"].as_u64()), (Some("45s"), Some(3)));
    let back: tidings::Topology = serde_json::from_value(json).unwrap();
    assert_eq!(back, t);
    assert_eq!(back.topics[0].config(), ORDERS.config());
    assert_eq!(back.topics[0].subscriptions[0].config(), config);
    let infinite = tidings::topology::TopologySubscription::new(
        "x",
        "x".into(),
        &config.with_retry(RetryPolicy::DEFAULT.with_max_retries(RetryPolicy::INFINITE_RETRIES)),
    );
    assert_eq!(serde_json::to_value(&infinite).unwrap()["max_retries"], serde_json::Value::Null);
}

static JOBS: Topic<Order> = Topic::new("jobs", TopicConfig::at_least_once());

#[tokio::test]
async fn the_operator_reads_and_redrives_dead_letters_of_subscriptions_running_on_the_in_memory_bus() {
    let bus = tidings::local();
    let config = SubscriptionConfig::default().with_max_retries(0);
    // Odd jobs fail the first time they are handled (and so are dead-lettered), then succeed once redriven.
    let failed = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let sub = bus
        .subscribe(&JOBS, "worker", config, move |m: Message<Order>| {
            let failed = failed.clone();
            async move {
                if m.n % 2 == 1 && failed.lock().unwrap().insert(m.n) {
                    Err(HandlerError::unrecoverable("odd job"))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    for n in 1..=4 {
        JOBS.publish(&bus, &Order { n }).await.unwrap();
    }
    let op = Operator::new(&bus);
    assert!(!op.has_admin());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while op.stats("jobs", "worker").await.unwrap().dead_letters != Some(2) {
        assert!(tokio::time::Instant::now() < deadline, "two jobs were not dead-lettered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let inv = op.inventory().await.unwrap();
    let entry = &inv.topics.iter().find(|t| t.name == "jobs").unwrap().subscriptions[0];
    assert!(entry.running_here);
    assert_eq!(entry.stats.dead_letters, Some(2));
    let listed = op.dead_letters("jobs", "worker", 10).await.unwrap();
    assert!(listed.iter().all(|d| d.reason.contains("odd job")), "{listed:?}");

    let first = listed[0].id.clone();
    let pace = Pace::unlimited();
    assert_eq!(op.redrive("jobs", "worker", &|d| d.id == first, &pace).await.unwrap(), 1);
    assert_eq!(pace.count(), 1);
    assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
    assert_eq!(op.stats("jobs", "worker").await.unwrap().dead_letters, Some(1));
    let e = op.purge("jobs", "worker", &|_| true, &pace).await.unwrap_err();
    assert_eq!(e.kind(), tidings::ErrorKind::Unsupported);
    let e = op.stats("jobs", "nobody").await.unwrap_err();
    assert_eq!(e.kind(), tidings::ErrorKind::NotFound);
    assert!(e.to_string().contains("\"nobody\""), "{e}");
}
