//! A `publish_batch` larger than the bus's call size (`max_publish_batch`, 1,000) is still all or nothing: the
//! bus takes it in one call (`Capabilities::atomic_publish`), so a backlog limit admits it whole or refuses it whole.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidings_core::{Bus, ErrorKind, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig, WhenFull};
use tidings_local::LocalBackend;

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u32,
}

static JOBS: Topic<Job> = Topic::new("jobs", TopicConfig::at_least_once());

#[tokio::test]
async fn a_batch_above_the_call_size_is_admitted_or_refused_whole_at_the_backlog_limit() {
    let bus = Bus::new(Arc::new(LocalBackend::new()));
    assert!(bus.capabilities().max_publish_batch < 1_500, "the batch is larger than one call of the bus");
    // Handlers never finish, so what is published stays in the backlog.
    let config =
        SubscriptionConfig::default().with_max_concurrency(1).with_max_backlog(1_000).with_when_full(WhenFull::Fail);
    let sub = bus
        .subscribe(&JOBS, "stalled", config, |_m: Message<Job>| {
            std::future::pending::<Result<(), tidings_core::HandlerError>>()
        })
        .await
        .unwrap();
    let jobs: Vec<Job> = (0..1_500).map(|n| Job { n }).collect();
    let batch = || jobs.iter().map(|j| (j, PublishOptions::new()));
    // Below the limit when it starts: taken whole (a batch may overshoot the limit by its own size).
    JOBS.publish_batch(&bus, batch()).await.expect("the subscription had room when the batch came");
    assert_eq!(sub.backlog().await.unwrap(), Some(1_500), "all of the batch, not the first call's 1,000");
    // At the limit: refused whole.
    let e = JOBS.publish_batch(&bus, batch()).await.expect_err("the subscription is full");
    assert_eq!(e.kind(), ErrorKind::BacklogFull, "{e}");
    assert_eq!(sub.backlog().await.unwrap(), Some(1_500), "nothing of the refused batch");
    bus.shutdown(std::time::Duration::from_secs(1)).await;
}
