//! The sampled `tidings.subscription.scheduled` gauge (Observability, "Sampled figures"): on the in-memory bus (read
//! from the subscription's driver) and SQLite (from the backend's operator figures) it counts the messages published
//! with a due time not reached yet, beside the backlog; on NATS, where the runtime holds delayed messages, the series
//! does not exist (no made-up zero). Read through a Prometheus recorder, as an application's scrape would show it.

#![cfg(all(feature = "sqlite", feature = "nats"))]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tidings::{Backend, Bus, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Reminder {
    n: u32,
}

/// The process's one recorder, installed before any bus is used.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new().install_recorder().expect("the test binary's only recorder");
        tidings::metrics::describe();
        handle
    })
}

fn unique(base: &str) -> &'static str {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    Box::leak(format!("{base}-{nanos:x}").into_boxed_str())
}

/// The value of `metric` for the subscription `sub` of `topic` in a scrape, if the series exists.
fn series(page: &str, metric: &str, backend: &str, topic: &str) -> Option<f64> {
    let labels = format!(r#"{{backend="{backend}",topic="{topic}",subscription="sub"}}"#);
    page.lines().find_map(|l| l.strip_prefix(&format!("{metric}{labels} "))).map(|v| v.parse().unwrap())
}

/// Two reminders due in an hour and one due now, on a subscription whose handler acks: once the due one is handled,
/// the scrape shows a backlog of 2 and, where the backend can tell, 2 scheduled.
async fn sampled(backend: Arc<dyn Backend>) -> (Option<f64>, Option<f64>) {
    let name = backend.name().to_string();
    let handle = prometheus();
    let bus = Bus::builder(backend).backlog_sample_interval(Duration::from_millis(20)).build();
    let topic: Topic<Reminder> = Topic::new(unique("reminders"), TopicConfig::at_least_once());
    let handled = Arc::new(tokio::sync::Notify::new());
    let told = handled.clone();
    let sub = bus
        .subscribe(&topic, "sub", SubscriptionConfig::default(), move |_m: Message<Reminder>| {
            let told = told.clone();
            async move {
                told.notify_one();
                Ok(())
            }
        })
        .await
        .unwrap();
    let later = PublishOptions::new().deliver_after(Duration::from_secs(3600));
    for n in 0..2 {
        topic.publish_with(&bus, &Reminder { n }, later.clone()).await.unwrap();
    }
    topic.publish(&bus, &Reminder { n: 2 }).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // The due reminder is handled, then its ack settles (the backlog itself reads 2; a backlog of 2 seen before the
    // third publish must not count), then the scrape shows the same state.
    tokio::time::timeout(Duration::from_secs(20), handled.notified()).await.expect("the due reminder is handled");
    while sub.backlog().await.unwrap() != Some(2) {
        assert!(tokio::time::Instant::now() < deadline, "{name}: backlog {:?}", sub.backlog().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while series(&handle.render(), "tidings_subscription_backlog", &name, topic.name()) != Some(2.0) {
        assert!(tokio::time::Instant::now() < deadline, "{name}: {}", handle.render());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let page = handle.render();
    let backlog = series(&page, "tidings_subscription_backlog", &name, topic.name());
    let scheduled = series(&page, "tidings_subscription_scheduled", &name, topic.name());
    bus.shutdown(Duration::from_secs(5)).await;
    (backlog, scheduled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_gauge_is_sampled_where_the_backend_can_tell_and_absent_elsewhere() {
    prometheus();
    let local = sampled(Arc::new(tidings::local::LocalBackend::new())).await;
    assert_eq!(local, (Some(2.0), Some(2.0)), "in-memory: backlog and scheduled");

    let mut sqlite = tidings::sql::SqliteConfig::default();
    sqlite.path = std::env::temp_dir().join(unique("tidings-scheduled-gauge")).join("bus.db");
    let sql = sampled(Arc::new(tidings::sql::SqlBackend::sqlite(sqlite).await.unwrap())).await;
    assert_eq!(sql, (Some(2.0), Some(2.0)), "SQLite (the operator's figures): backlog and scheduled");

    let mut nats = tidings::nats::NatsConfig::default();
    nats.url = Some("nats://127.0.0.1:4222".into());
    let held = sampled(Arc::new(tidings::nats::NatsBackend::new(nats).await.unwrap())).await;
    assert_eq!(held, (Some(2.0), None), "NATS holds delayed messages in the subscribing processes: no series");
    let page = prometheus().render();
    assert!(
        page.contains("# HELP tidings_subscription_scheduled Messages of the backlog waiting for their delivery time")
    );
}
