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
async fn the_operator_reads_redrives_and_purges_dead_letters_of_subscriptions_running_on_the_in_memory_bus() {
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
    // The in-memory bus purges too, through the same dead-letter surface.
    assert_eq!(op.purge("jobs", "worker", &|_| true, &pace).await.unwrap(), 1);
    assert_eq!(pace.count(), 2);
    assert_eq!(op.stats("jobs", "worker").await.unwrap().dead_letters, Some(0));
    assert!(op.dead_letters("jobs", "worker", 10).await.unwrap().is_empty());
    let e = op.stats("jobs", "nobody").await.unwrap_err();
    assert_eq!(e.kind(), tidings::ErrorKind::NotFound);
    assert!(e.to_string().contains("\"nobody\""), "{e}");
}

static SIGNUPS: Topic<Order> = Topic::new("signups", TopicConfig::at_least_once());

/// README, "Dead letters from another process": a process that does not consume a subscription reads and redrives
/// its dead letters through `Operator` (here a second bus on the same SQLite file, as a separate process would build
/// it), and does not become a competing consumer: nothing published while it runs is delivered to it.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_bus_reads_and_redrives_dead_letters_of_a_subscription_consumed_elsewhere() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    let dir = std::env::temp_dir().join(format!(
        "tidings-operator-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    let vars = |dir: &std::path::Path| -> HashMap<String, String> {
        HashMap::from([
            ("TIDINGS_BACKEND".into(), "sqlite".into()),
            ("TIDINGS_SQLITE__PATH".into(), dir.join("bus.db").display().to_string()),
        ])
    };
    let app = tidings::from_settings(tidings::Settings::load(vars(&dir)).unwrap()).await.unwrap();
    // The application: user 1 fails with a timeout the first time (dead-lettered at once), the others succeed.
    let handled = Arc::new(AtomicU32::new(0));
    let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (h, f) = (handled.clone(), failed_once.clone());
    let config = SubscriptionConfig::default().with_max_retries(0);
    let sub = app
        .subscribe(&SIGNUPS, "email", config, move |m: Message<Order>| {
            let (h, f) = (h.clone(), f.clone());
            async move {
                if m.n == 1 && !f.swap(true, Ordering::SeqCst) {
                    return Err(HandlerError::unrecoverable("smtp timeout"));
                }
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await
        .unwrap();
    SIGNUPS.publish(&app, &Order { n: 1 }).await.unwrap();
    assert!(sub.wait_idle(Duration::from_secs(20)).await.unwrap());

    // The operator's process: the same configuration, nothing subscribed.
    let bus = tidings::from_settings(tidings::Settings::load(vars(&dir)).unwrap()).await.unwrap();
    let ops = Operator::new(&bus);
    let dead = ops.dead_letters("signups", "email", 100).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].attempts, dead[0].reason.contains("smtp timeout")), (1, true), "{dead:?}");
    // While the operator bus is open, live messages still all go to the application.
    for n in 2..=4 {
        SIGNUPS.publish(&app, &Order { n }).await.unwrap();
    }
    assert!(sub.wait_idle(Duration::from_secs(20)).await.unwrap());
    assert_eq!(handled.load(Ordering::SeqCst), 3);
    let moved = ops
        .redrive("signups", "email", &|d| d.reason.contains("timeout"), &Pace::per_second(50.0).unwrap())
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while handled.load(Ordering::SeqCst) < 4 {
        assert!(tokio::time::Instant::now() < deadline, "the redriven dead letter was not handled by the application");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ops.dead_letters("signups", "email", 100).await.unwrap().is_empty());
    app.shutdown(Duration::from_secs(5)).await;
    bus.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
