//! The shared conformance suite against the in-memory bus.

use std::sync::Arc;

use tidings_core::Bus;
use tidings_local::LocalBackend;
use tidings_testkit::conformance::{Harness, Timing};

struct Local;

impl Harness for Local {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(LocalBackend::new()))
    }
    fn timing(&self) -> Timing {
        Timing::FAST
    }
}

/// The local bus with `nack_delay` turned off, so the runtime's hold-then-nack fallback is what runs.
struct LocalWithoutNackDelay;

impl Harness for LocalWithoutNackDelay {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(LocalBackend::new().without_nack_delay()))
    }
    fn timing(&self) -> Timing {
        Timing::FAST
    }
}

tidings_testkit::conformance_tests!(
    local => Local,
    local_without_nack_delay => LocalWithoutNackDelay,
);

/// Load with injected failures, panics and slow handlers: every message ends acked or dead-lettered, in each of two
/// subscriptions.
#[test]
fn ledger_20000_messages_under_failures() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Local, 20_000, false));
}

#[test]
fn ledger_exactly_once_has_no_duplicate_after_ack() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Local, 5_000, true));
}

/// The backlog gauge of a running subscription is sampled on the bus's interval (the messages its stalled handlers
/// hold, then zero once they are acked), and a redrive is counted.
#[test]
fn backlog_gauge_is_sampled_and_redrives_are_counted() {
    use std::time::Duration;
    use tidings_core::metrics::{BACKLOG, DEAD_LETTERED, REDRIVEN};
    use tidings_core::{HandlerError, Message, SubscriptionConfig, Topic, TopicConfig};
    use tidings_testkit::conformance::recorded::{install, snapshot, sum};
    tidings_testkit::conformance::block_on(async {
        install();
        let bus =
            Bus::builder(Arc::new(LocalBackend::new())).backlog_sample_interval(Duration::from_millis(20)).build();
        let name: &'static str = Box::leak(format!("gauged-{}", uuid_suffix()).into_boxed_str());
        let topic: Topic<u64> = Topic::new(name, TopicConfig::at_least_once());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let sub = bus
            .subscribe(&topic, "s", SubscriptionConfig::default(), move |m: Message<u64>| {
                let g = g.clone();
                async move {
                    if m.payload == 99 {
                        return Err(HandlerError::unrecoverable("refused"));
                    }
                    g.acquire().await.unwrap().forget();
                    Ok(())
                }
            })
            .await
            .unwrap();
        for n in 0..3 {
            topic.publish(&bus, &n).await.unwrap();
        }
        let f = [("backend", "local"), ("topic", name), ("subscription", "s")];
        let until = |want: f64, what: &str| {
            let what = what.to_string();
            async move {
                for _ in 0..500 {
                    if sum(&snapshot(&f), BACKLOG, &[]) == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!("{what}: backlog gauge {} after 10 s, want {want}", sum(&snapshot(&f), BACKLOG, &[]));
            }
        };
        until(3.0, "three held by their handlers").await;
        gate.add_permits(3);
        until(0.0, "all acked").await;
        topic.publish(&bus, &99).await.unwrap();
        while sub.dead_letters(10).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sub.redrive_all().await.unwrap(), 1);
        let s = snapshot(&f);
        assert_eq!(sum(&s, REDRIVEN, &[]), 1.0);
        assert!(sum(&s, DEAD_LETTERED, &[("reason", "unrecoverable")]) >= 1.0);
        bus.shutdown(Duration::from_secs(5)).await;
    });
}

fn uuid_suffix() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}
