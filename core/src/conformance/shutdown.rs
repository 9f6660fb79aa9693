//! The bound on a whole bus's shutdown: several subscriptions, handlers busy past the timeout, receives in flight.
#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::support::{sub_config, topic, wait_until, Event, Log};
use super::Harness;
use crate::{Bus, Message, Topic, TopicConfig};

/// Counts the handlers dropped before they finished.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Logs each delivery; a first attempt then runs until it is dropped, a later one succeeds.
fn stuck_on_first_attempt(
    log: &Log,
    dropped: &Arc<AtomicUsize>,
) -> impl Fn(Message<Event>) -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::HandlerResult> + Send>>
       + Send
       + Sync
       + 'static {
    let (log, dropped) = (log.clone(), dropped.clone());
    move |m| {
        log.record(&m);
        let guard = (m.attempt() == 1).then(|| Dropped(dropped.clone()));
        Box::pin(async move {
            if let Some(_guard) = guard {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
    }
}

/// `Bus::shutdown(timeout)` with four subscriptions whose handlers run past the timeout (each with its next receive
/// in flight beside them) and one idle subscription waiting in a receive (a long poll, on brokers that have them):
/// it takes the timeout (the handlers get it), returns within the timeout plus [`Bus::SHUTDOWN_MARGIN`] (the stated
/// tolerance: the subscriptions stop together, and what the backend still has open finishes in the background), drops
/// the handlers, and leaves their messages unacked: the same subscriptions, started again, get each one back as a
/// later attempt.
pub async fn bus_shutdown_returns_within_its_timeout_plus_the_margin<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let timeout = Duration::from_secs(1);
    let busy: Vec<Topic<Event>> = (0..4).map(|_| topic("shutdown-bound", TopicConfig::at_least_once())).collect();
    let idle = topic::<Event>("shutdown-idle", TopicConfig::at_least_once());
    let (log, dropped) = (Log::default(), Arc::new(AtomicUsize::new(0)));
    let cfg = sub_config(&t, 5);
    for topic in &busy {
        bus.subscribe(topic, "sub", cfg, stuck_on_first_attempt(&log, &dropped)).await.unwrap();
    }
    bus.subscribe(&idle, "sub", cfg, stuck_on_first_attempt(&log, &dropped)).await.unwrap();
    for (i, topic) in busy.iter().enumerate() {
        for n in 0..2 {
            topic.publish(&bus, &Event::new(i as u64 * 10 + n)).await.unwrap();
        }
    }
    assert!(wait_until(t.patience, || log.len() >= 8).await, "every handler started: {} of 8", log.len());
    // The receives beside the busy handlers and the idle subscription's are now waiting at the broker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let begun = Instant::now();
    bus.shutdown(timeout).await;
    let took = begun.elapsed();
    eprintln!(
        "conformance::{}::bus_shutdown_returns_within_its_timeout_plus_the_margin: shutdown({timeout:?}) of 5 \
         subscriptions took {took:?}",
        bus.backend_name()
    );
    assert!(took >= timeout, "the busy handlers were given the whole timeout: shutdown returned after {took:?}");
    let bound = timeout + Bus::SHUTDOWN_MARGIN;
    assert!(
        took <= bound,
        "shutdown({timeout:?}) returned after {took:?}, past the timeout plus the margin ({bound:?})"
    );
    assert!(wait_until(t.patience, || dropped.load(SeqCst) == 8).await, "the 8 unfinished handlers were dropped");
    assert_eq!(log.len(), 8, "nothing was handed to a handler during or after the shutdown");

    // Unacked: the same subscriptions, started again (the old bus refuses to), get every message back.
    let again = Bus::builder(bus.backend().clone()).settings(bus.settings().clone()).build();
    let back = Log::default();
    for topic in &busy {
        again.subscribe(topic, "sub", cfg, stuck_on_first_attempt(&back, &dropped)).await.unwrap();
    }
    let redelivered =
        |log: &Log| log.all().iter().filter(|d| d.meta.attempt >= 2).map(|d| d.event.n).collect::<BTreeSet<u64>>();
    let all = wait_until(t.patience + t.ack_deadline, || redelivered(&back).len() == 8).await;
    let got = redelivered(&back);
    assert!(all, "each unfinished message came back as a later attempt: {got:?} of 8");
    assert_eq!(got, [0, 1, 10, 11, 20, 21, 30, 31].into(), "the unfinished messages, and only those, came back");
    again.shutdown(t.patience).await;
}
