//! The reference backend's drivers called directly, on tokio's paused clock: what the conformance suite reaches only
//! through the runtime (which retries, chains ordered messages and extends leases on its own).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tidings_core::backend::{DeadLetterRequest, OutgoingMessage, ReceivedMessage, SubscriptionSpec, TopicSpec};
use tidings_core::dead_letter::peek;
use tidings_core::{Attributes, Backend, MessageId, SubscriptionConfig, SubscriptionDriver, TopicConfig, TopicDriver};
use tidings_testkit::Reference;

const DEADLINE: Duration = Duration::from_secs(10);

async fn drivers(config: TopicConfig) -> (Arc<dyn TopicDriver>, Arc<dyn SubscriptionDriver>) {
    let backend = Reference::new();
    let topic = TopicSpec::new("t", "t", config);
    let sub = SubscriptionSpec::new(topic.clone(), "s", "s", SubscriptionConfig::DEFAULT.with_ack_deadline(DEADLINE));
    (backend.topic(&topic).await.unwrap(), backend.subscription(&sub).await.unwrap())
}

fn msg(id: &str, key: Option<&str>) -> OutgoingMessage {
    let (payload, now) = (Bytes::from_static(b"{}"), SystemTime::now());
    OutgoingMessage::new(MessageId::from(id), payload, Attributes::new(), key.map(Arc::from), now)
}

/// Receives without waiting: (id, attempt) of each delivery, and the deliveries.
async fn take(sub: &dyn SubscriptionDriver) -> (Vec<(String, u32)>, Vec<ReceivedMessage>) {
    let got = sub.receive(10, Duration::ZERO).await.unwrap();
    (got.iter().map(|m| (m.id.to_string(), m.attempt)).collect(), got)
}

fn pairs(ids: &[(&str, u32)]) -> Vec<(String, u32)> {
    ids.iter().map(|(id, n)| (id.to_string(), *n)).collect()
}

#[tokio::test(start_paused = true)]
async fn one_message_per_key_is_out_and_a_redelivery_comes_before_later_ones() {
    let (topic, sub) = drivers(TopicConfig::at_least_once().ordered()).await;
    topic
        .publish(&[msg("k1", Some("k")), msg("o1", Some("other")), msg("k2", Some("k")), msg("n1", None)])
        .await
        .unwrap();
    let (ids, first) = take(&*sub).await;
    assert_eq!(ids, pairs(&[("k1", 1), ("o1", 1), ("n1", 1)]), "k2 waits behind k1");
    sub.nack(vec![(first[0].ack_id.clone(), Duration::from_secs(1))]).await.unwrap();
    assert!(take(&*sub).await.0.is_empty(), "a message nacked with a delay still holds its key");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(take(&*sub).await.0, pairs(&[("k1", 2)]), "the redelivery, not k2");
    tokio::time::advance(DEADLINE).await;
    let (ids, again) = take(&*sub).await;
    assert_eq!(ids, pairs(&[("k1", 3), ("o1", 2), ("n1", 2)]), "expired leases, in publish order");
    sub.ack(again.iter().map(|m| m.ack_id.clone()).collect()).await.unwrap();
    assert_eq!(take(&*sub).await.0, pairs(&[("k2", 1)]), "the ack frees the key");
}

#[tokio::test(start_paused = true)]
async fn exactly_once_drops_a_known_id_and_ignores_a_stale_ack() {
    let (topic, sub) = drivers(TopicConfig::exactly_once()).await;
    topic.publish(&[msg("a", None), msg("a", None)]).await.unwrap();
    assert_eq!(sub.backlog().await.unwrap(), Some(1), "the republished id is dropped");
    let (_, first) = take(&*sub).await;
    tokio::time::advance(DEADLINE).await;
    let (ids, second) = take(&*sub).await;
    assert_eq!(ids, pairs(&[("a", 2)]), "redelivered once its lease ran out");
    sub.ack(vec![first[0].ack_id.clone()]).await.unwrap();
    assert_eq!(sub.backlog().await.unwrap(), Some(1), "the expired lease's ack is ignored");
    sub.ack(vec![second[0].ack_id.clone()]).await.unwrap();
    topic.publish(&[msg("a", None)]).await.unwrap();
    assert_eq!(sub.backlog().await.unwrap(), Some(0), "acked, and not accepted again");
}

#[tokio::test(start_paused = true)]
async fn extended_leases_hold_and_redrive_resets_the_attempts() {
    let (topic, sub) = drivers(TopicConfig::at_least_once()).await;
    topic.publish(&[msg("a", Some("k")), msg("b", None)]).await.unwrap();
    let (_, got) = take(&*sub).await;
    sub.extend_lease(vec![got[0].ack_id.clone()], DEADLINE * 2).await.unwrap();
    tokio::time::advance(DEADLINE).await;
    let (ids, b) = take(&*sub).await;
    assert_eq!(ids, pairs(&[("b", 2)]), "a's extended lease holds, b's ran out");
    let reasons = [(got[0].clone(), "bad a"), (b[0].clone(), "bad b")];
    sub.dead_letter(reasons.into_iter().map(|(m, r)| DeadLetterRequest::new(m, r)).collect()).await.unwrap();
    let queue = sub.clone().dead_letter_queue().expect("the reference backend keeps a dead-letter queue");
    let dead = peek(&*queue, 10).await.unwrap();
    let seen: Vec<_> =
        dead.iter().map(|d| (d.id.as_str(), d.attempts, d.reason.as_str(), d.ordering_key.as_deref())).collect();
    assert_eq!(seen, vec![("a", 1, "bad a", Some("k")), ("b", 2, "bad b", None)]);
    assert_eq!(sub.backlog().await.unwrap(), Some(0));
    let page = queue.read(None, 10).await.unwrap();
    assert!(page.next.is_none(), "two letters fit one page");
    let b_letter: Vec<_> = page.letters.into_iter().filter(|h| h.letter.id == MessageId::from("b")).collect();
    queue.restore(b_letter).await.unwrap();
    assert_eq!(take(&*sub).await.0, pairs(&[("b", 1)]), "attempts count from zero again");
    assert_eq!(peek(&*queue, 10).await.unwrap().len(), 1, "a stays");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_receive_wakes_for_a_publish() {
    let (topic, sub) = drivers(TopicConfig::at_least_once()).await;
    let start = tokio::time::Instant::now();
    let waiting = tokio::spawn({
        let sub = sub.clone();
        async move { sub.receive(10, Duration::from_secs(60)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "nothing to receive yet");
    topic.publish(&[msg("a", None)]).await.unwrap();
    let got = waiting.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(start.elapsed() < Duration::from_secs(2), "woken by the publish, not at its 60 s timeout");
}
