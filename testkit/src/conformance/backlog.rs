//! The bounded backlog (capability `bounded_backlog`): a subscription at its `max_backlog` makes publishes fail with
//! `when_full = "fail"` and wait with `"wait"`, and loses nothing it accepted.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::support::{self, sub_config, topic, wait_until, Event};
use super::Harness;
use tidings_core::{ErrorKind, Message, TopicConfig, WhenFull};

/// A subscription whose handlers each wait for a permit of `gate`, counting the messages they finished.
async fn gated(
    bus: &tidings_core::Bus,
    topic: &tidings_core::Topic<Event>,
    config: tidings_core::SubscriptionConfig,
) -> (Arc<Semaphore>, Arc<AtomicUsize>) {
    let (gate, handled) = (Arc::new(Semaphore::new(0)), Arc::new(AtomicUsize::new(0)));
    let (g, n) = (gate.clone(), handled.clone());
    bus.subscribe(topic, "bounded", config, move |_m: Message<Event>| {
        let (g, n) = (g.clone(), n.clone());
        async move {
            g.acquire().await.expect("gate open").forget();
            n.fetch_add(1, SeqCst);
            Ok(())
        }
    })
    .await
    .expect("subscribe with a backlog limit");
    (gate, handled)
}

/// A subscription at its `max_backlog` refuses publishes with `when_full = "fail"` (naming the limit) and holds them
/// back with `"wait"` until a handler finishes; every accepted message is handled.
pub async fn bounded_backlog_fails_or_waits_at_the_limit<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    support::require(
        &bus,
        bus.capabilities().bounded_backlog,
        "bounded_backlog_fails_or_waits_at_the_limit",
        "bounded_backlog",
    );

    // "fail": the fourth message finds three in the backlog (leased to the stalled handlers) and is refused at once.
    let failing = topic::<Event>("bounded-fail", TopicConfig::at_least_once());
    let config = sub_config(&t, 5).with_max_backlog(3).with_when_full(WhenFull::Fail);
    let (gate, handled) = gated(&bus, &failing, config).await;
    for n in 0..3 {
        failing.publish(&bus, &Event::new(n)).await.expect("room below the limit");
    }
    let e = failing.publish(&bus, &Event::new(3)).await.expect_err("the backlog is at its limit");
    assert_eq!(e.kind(), ErrorKind::BacklogFull, "{e}");
    assert!(e.to_string().contains("max_backlog of 3") && e.to_string().contains("bounded"), "{e}");
    gate.add_permits(3);
    assert!(wait_until(t.patience, || handled.load(SeqCst) == 3).await, "the three accepted messages are handled");
    // Once the handlers caught up (and their acks arrived), the subscription takes messages again.
    let end = tokio::time::Instant::now() + t.patience;
    loop {
        match failing.publish(&bus, &Event::new(4)).await {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::BacklogFull && tokio::time::Instant::now() < end => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            Err(e) => panic!("a publish is accepted again once the backlog is below its limit: {e}"),
        }
    }
    gate.add_permits(1);
    assert!(wait_until(t.patience, || handled.load(SeqCst) == 4).await, "the later message is handled");

    // "wait": the third publish waits while two are in the backlog, and completes once a handler finishes.
    let waiting = topic::<Event>("bounded-wait", TopicConfig::at_least_once());
    let (gate, handled) = gated(&bus, &waiting, sub_config(&t, 5).with_max_backlog(2)).await;
    for n in 0..2 {
        waiting.publish(&bus, &Event::new(n)).await.expect("room below the limit");
    }
    let (b, w) = (bus.clone(), tidings_core::Topic::<Event>::new(waiting.name(), waiting.config()));
    let third = tokio::spawn(async move { w.publish(&b, &Event::new(2)).await });
    tokio::time::sleep(t.ack_deadline / 2).await;
    assert!(!third.is_finished(), "a publish waits while the backlog is at its limit");
    gate.add_permits(1);
    third.await.expect("publish task").expect("the waiting publish is accepted once there is room");
    gate.add_permits(2);
    assert!(wait_until(t.patience, || handled.load(SeqCst) == 3).await, "every accepted message is handled");
    bus.shutdown(t.patience).await;
}
