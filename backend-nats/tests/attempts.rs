//! The attempt never counts down: a message JetStream hands out again with a delivery count at or below one tidings
//! already reported (nats-server before 2.10.14 does, after a redelivery to a pull whose client went away:
//! nats-io/nats-server#5305) is reported as the next attempt.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::backend::{AckId, SubscriptionSpec, TopicSpec};
use tidings_core::{Backend, Bus, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: u64,
}

/// The delivery count the server wrote in a reply subject (`$JS.ACK.<stream>.<consumer>.<delivered>...`, or the form
/// with domain and account hash).
fn server_count(id: &AckId) -> u64 {
    let AckId::Text(reply) = id else { panic!("a NATS ack id is its reply subject: {id:?}") };
    let t: Vec<&str> = reply.split('.').collect();
    let at = if t.len() == 9 { 4 } else { 6 };
    t[at].parse().unwrap_or_else(|_| panic!("no delivery count in {reply:?}"))
}

/// A message is delivered (attempt 1) and not settled; a pull waits on the consumer and its client goes away; the ack
/// wait ends, the server redelivers to that pull and cannot. nats-server 2.9.10 (Debian 12's) then hands the message
/// out again as new, count 1 (the server's count is printed); tidings must report attempt 2 (here to the
/// subscription started again in this process, which shares what the first one saw).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_the_server_counts_as_a_first_delivery_is_still_the_next_attempt() {
    let backend = support::backend(support::config()).await;
    let name: &'static str = Box::leak(support::unique("floor").into_boxed_str());
    let ack_wait = Duration::from_secs(1);
    let cfg = SubscriptionConfig::DEFAULT.with_ack_deadline(ack_wait);
    let consumer = format!("{name}--sub");
    let spec = SubscriptionSpec::new(TopicSpec::new(name, name, TopicConfig::at_least_once()), "sub", &consumer, cfg);
    let first = backend.subscription(&spec).await.unwrap();
    let bus = Bus::new(Arc::new(backend.clone()));
    Topic::<Event>::new(name, TopicConfig::at_least_once()).publish(&bus, &Event { n: 1 }).await.unwrap();
    let got = first.receive(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.iter().map(|m| m.attempt).collect::<Vec<_>>(), [1], "the first delivery");

    // A pull that waits on the consumer (10 s), then loses its client while it waits.
    let client = async_nats::connect(support::url()).await.unwrap();
    let inbox = client.new_inbox();
    let mut gone = client.subscribe(inbox.clone()).await.unwrap();
    let pull = format!("$JS.API.CONSUMER.MSG.NEXT.{name}.{consumer}");
    client.publish_with_reply(pull, inbox, r#"{"batch": 1, "expires": 10000000000}"#.into()).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    gone.unsubscribe().await.unwrap();
    client.flush().await.unwrap();
    // The ack wait ends while that pull is the only one waiting: the redelivery goes to it, and nowhere.
    tokio::time::sleep(ack_wait + Duration::from_millis(700)).await;

    // The subscription started again in this process (a new driver of the same consumer).
    let again = backend.subscription(&spec).await.unwrap();
    let back = again.receive(10, Duration::from_secs(5)).await.unwrap();
    let counted: Vec<u64> = back.iter().map(|m| server_count(&m.ack_id)).collect();
    let attempts: Vec<u32> = back.iter().map(|m| m.attempt).collect();
    eprintln!(
        "nats-server {}: counted the message's next deliveries {counted:?}; tidings reported attempts {attempts:?}",
        client.server_info().version
    );
    assert!(!back.is_empty(), "the unsettled message came back");
    assert!(back.iter().all(|m| m.id == got[0].id), "only that message came back");
    // 2.9.10 hands it out twice here: as new (count 1), and at the next ack wait as its redelivery (count 3).
    assert!(
        attempts.iter().all(|a| *a >= 2) && attempts.windows(2).all(|w| w[0] < w[1]),
        "attempts {attempts:?} after attempt 1 (server counts {counted:?}): each delivery counts as a later attempt"
    );
    again.ack(back.iter().map(|m| m.ack_id.clone()).collect()).await.unwrap();
    again.close().await.unwrap();
    first.close().await.unwrap();
}
