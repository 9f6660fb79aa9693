//! The operator SPI ([`tidings_core::admin::Admin`]) of a backend whose state lives outside a process, through
//! [`Operator`] as the CLI and the dashboard use it: exact backlog, in-flight and DLQ depth, an oldest-unacked age,
//! dead letters read, redriven selectively (each once, even when the handler dead-letters them again during the
//! sweep), purged, and a subscription deleted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use tidings_core::admin::{Operator, Pace};
use tidings_core::{Bus, ErrorKind, HandlerError, Message, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: u64,
}

fn config() -> SubscriptionConfig {
    SubscriptionConfig::DEFAULT
        .with_ack_deadline(Duration::from_secs(30))
        .with_retry(RetryPolicy::new(Duration::from_millis(50), Duration::from_millis(100)).with_max_retries(0))
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(tokio::time::Instant::now() < end, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Jobs >= 1000 are poison until `healed`; job 500 is held (in flight) until `release`.
struct App {
    seen: Arc<Mutex<Vec<u64>>>,
    healed: Arc<AtomicBool>,
    release: Arc<Notify>,
}

async fn subscribe_work(bus: &Bus, t: &Topic<Job>) -> (tidings_core::Subscription, App) {
    let app = App { seen: Arc::default(), healed: Arc::default(), release: Arc::new(Notify::new()) };
    let (seen, healed, release) = (app.seen.clone(), app.healed.clone(), app.release.clone());
    let sub = bus
        .subscribe(t, "work", config(), move |m: Message<Job>| {
            let (seen, healed, release) = (seen.clone(), healed.clone(), release.clone());
            async move {
                seen.lock().unwrap().push(m.n);
                if m.n == 500 {
                    release.notified().await;
                }
                if m.n >= 1000 && !healed.load(Ordering::SeqCst) {
                    return Err(HandlerError::unrecoverable(format!("job {} is poison", m.n)));
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    (sub, app)
}

/// The story on `bus` with a topic named `name` (fresh, so nothing else is in it): an `idle` subscription keeps a
/// backlog, `work` dead-letters three jobs and holds one in flight.
pub async fn operator_story(bus: &Bus, name: &str) {
    let bus = bus.clone();
    let name = name.to_string();
    let t: Topic<Job> = Topic::new(Box::leak(name.clone().into_boxed_str()), TopicConfig::at_least_once());
    // `idle` registers, then stops: what is published later waits there as backlog.
    let idle = bus.subscribe(&t, "idle", config(), |_: Message<Job>| async { Ok(()) }).await.unwrap();
    idle.shutdown(Duration::from_secs(5)).await;
    let (work, app) = subscribe_work(&bus, &t).await;
    for n in [1000, 1001, 1002, 500, 1, 2] {
        t.publish(&bus, &Job { n }).await.unwrap();
    }
    let op = Operator::new(&bus);
    assert!(op.has_admin());
    until("3 dead letters and job 500 running", || async {
        op.stats(&name, "work").await.unwrap().dead_letters == Some(3) && app.seen.lock().unwrap().contains(&500)
    })
    .await;

    until("job 500 the only backlog of `work`, leased to its handler", || async {
        let s = op.stats(&name, "work").await.unwrap();
        (s.backlog, s.in_flight, s.dead_letters) == (Some(1), Some(1), Some(3))
    })
    .await;
    let inv = op.inventory().await.unwrap();
    let topic = inv.topics.iter().find(|x| x.name == name).expect("the topic is listed");
    let subs: Vec<&str> = topic.subscriptions.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(subs, ["idle", "work"]);
    let (idle_stats, work_stats) = (&topic.subscriptions[0].stats, &topic.subscriptions[1].stats);
    assert_eq!((idle_stats.backlog, idle_stats.in_flight, idle_stats.dead_letters), (Some(6), Some(0), Some(0)));
    assert!(idle_stats.oldest_unacked.is_some());
    assert_eq!(
        (work_stats.backlog, work_stats.in_flight, work_stats.dead_letters),
        (Some(1), Some(1), Some(3)),
        "job 500 is the backlog, leased to its handler"
    );
    assert!(inv.unknown.iter().any(|u| u.field == "rates"));

    let dead = op.dead_letters(&name, "work", 100).await.unwrap();
    let mut reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["unrecoverable: job 1000 is poison", "unrecoverable: job 1001 is poison", "unrecoverable: job 1002 is poison"]
    );
    assert_eq!(op.dead_letters(&name, "work", 2).await.unwrap().len(), 2);

    // Still poison: all three are redriven once and come back; the sweep does not meet them twice.
    let pace = Pace::unlimited();
    assert_eq!(op.redrive(&name, "work", &|_| true, &pace).await.unwrap(), 3);
    assert_eq!(pace.count(), 3);
    until("the redriven poison back in the DLQ", || async {
        op.stats(&name, "work").await.unwrap().dead_letters == Some(3)
            && app.seen.lock().unwrap().iter().filter(|n| **n >= 1000).count() == 6
    })
    .await;

    // Healed: the one selected by its reason is handled; the others stay.
    app.healed.store(true, Ordering::SeqCst);
    let one = |d: &tidings_core::DeadLetter| d.reason.contains("job 1001");
    assert_eq!(op.redrive(&name, "work", &one, &Pace::unlimited()).await.unwrap(), 1);
    until("job 1001 handled", || async {
        app.seen.lock().unwrap().iter().filter(|n| **n == 1001).count() == 3
            && op.stats(&name, "work").await.unwrap().dead_letters == Some(2)
    })
    .await;

    assert_eq!(op.purge(&name, "work", &|_| true, &Pace::unlimited()).await.unwrap(), 2);
    assert!(op.dead_letters(&name, "work", 100).await.unwrap().is_empty());
    app.release.notify_one();
    until("the backlog drained", || async { op.stats(&name, "work").await.unwrap().backlog == Some(0) }).await;

    let spec = bus.subscription_spec(&t, "idle", config());
    op.delete_subscription(&spec).await.unwrap();
    let err = op.stats(&name, "idle").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let inv = op.inventory().await.unwrap();
    let topic = inv.topics.iter().find(|x| x.name == name).unwrap();
    assert_eq!(topic.subscriptions.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["work"]);
    work.shutdown(Duration::from_secs(5)).await;
    bus.shutdown(Duration::from_secs(5)).await;
}
