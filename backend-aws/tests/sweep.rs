//! The operator's sweep over an SQS dead-letter queue, through the one dead-letter surface: SQS hands out at most 10
//! letters a read and keeps no order a read could go on from (a read hides what it hands out), so a sweep over more
//! than one read's worth must still meet every letter once: a purge of a selection takes exactly the selected letters,
//! and a redrive of the rest moves each of them once.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::admin::{Operator, Pace};
use tidings_core::{Bus, HandlerError, Message, RetryPolicy, Settings, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u32,
}

static JOBS: Topic<Job> = Topic::new("jobs", TopicConfig::at_least_once());

/// Dead letters: more than two SQS reads' worth.
const LETTERS: u32 = 25;

async fn bus() -> Bus {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let settings = Settings::from_toml(&format!("name_prefix = \"sweep-{}-\"", &id[id.len() - 12..])).unwrap();
    Bus::builder(Arc::new(support::backend(support::config()).await)).settings(settings).build()
}

/// The job numbers of the subscription's dead letters, as the operator reads them (each letter once).
async fn dead_jobs(op: &Operator) -> Vec<u32> {
    let letters = op.dead_letters("jobs", "work", 100).await.expect("dead letters");
    let ids: BTreeSet<_> = letters.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), letters.len(), "a read of the dead-letter queue meets each letter once: {letters:?}");
    let mut jobs: Vec<u32> = letters.iter().map(|d| d.decode::<Job>().unwrap().n).collect();
    jobs.sort_unstable();
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_over_more_than_one_read_moves_each_selected_letter_once() {
    let bus = bus().await;
    let config = SubscriptionConfig::DEFAULT.with_max_retries(RetryPolicy::NO_RETRIES);
    let sub = bus
        .subscribe(&JOBS, "work", config, |m: Message<Job>| async move {
            Err::<(), _>(HandlerError::unrecoverable(format!("job {} declined", m.n)))
        })
        .await
        .unwrap();
    for n in 0..LETTERS {
        JOBS.publish(&bus, &Job { n }).await.unwrap();
    }
    let op = Operator::new(&bus);
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while dead_jobs(&op).await.len() < LETTERS as usize {
        assert!(tokio::time::Instant::now() < end, "the jobs were not all dead-lettered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dead_jobs(&op).await, (0..LETTERS).collect::<Vec<_>>());
    // Stopped, so that what is redriven stays in the subscription's queue to be counted.
    sub.shutdown(Duration::from_secs(5)).await;

    let even = |d: &tidings_core::DeadLetter| d.decode::<Job>().unwrap().n % 2 == 0;
    assert_eq!(op.purge("jobs", "work", &even, &Pace::unlimited()).await.unwrap(), 13, "the even jobs, each once");
    let odd: Vec<u32> = (0..LETTERS).filter(|n| n % 2 == 1).collect();
    assert_eq!(dead_jobs(&op).await, odd, "the letters not selected are left, visible again");

    assert_eq!(op.redrive("jobs", "work", &|_| true, &Pace::unlimited()).await.unwrap(), 12, "each odd job once");
    assert!(dead_jobs(&op).await.is_empty());
    let stats = op.stats("jobs", "work").await.unwrap();
    assert_eq!((stats.backlog, stats.dead_letters), (Some(12), Some(0)), "one copy of each in the subscription");
    bus.shutdown(Duration::from_secs(5)).await;
}
