//! NATS-specific behaviour: provisioning (idempotent, `verify` mismatches, `off`), messages from plain async-nats
//! producers, the backlog, and the server's `max_payload` as the size limit.

mod support;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::response::Response;
use serde::{Deserialize, Serialize};
use tidings_core::backend::{SubscriptionSpec, TopicSpec};
use tidings_core::{Backend, Bus, ErrorKind, HandlerError, Message, SubscriptionConfig, Topic, TopicConfig};
use tidings_nats::Provisioning;

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct Event {
    text: String,
}

fn spec(topic: &str, config: TopicConfig, sub: SubscriptionConfig) -> SubscriptionSpec {
    SubscriptionSpec::new(TopicSpec::new(topic, topic, config), "sub", format!("{topic}--sub"), sub)
}

async fn js() -> async_nats::jetstream::Context {
    support::require_server();
    async_nats::jetstream::new(async_nats::connect(support::url()).await.unwrap())
}

async fn consumer_info(stream: &str, name: &str) -> async_nats::jetstream::consumer::Info {
    let r: Response<async_nats::jetstream::consumer::Info> =
        js().await.request(format!("CONSUMER.INFO.{stream}.{name}"), &serde_json::json!({})).await.unwrap();
    match r {
        Response::Ok(i) => i,
        Response::Err { error } => panic!("consumer {name}: {error}"),
    }
}

#[tokio::test]
async fn provisioning_is_idempotent_and_maps_the_settings() {
    let backend = support::backend(support::config()).await;
    let topic = support::unique("idem");
    let cfg = SubscriptionConfig::DEFAULT.with_ack_deadline(Duration::from_secs(7)).with_max_retries(4);
    let s = spec(&topic, TopicConfig::exactly_once(), cfg);
    backend.provision(&s).await.unwrap();
    let creates = |b: &tidings_nats::NatsBackend| {
        let snap = b.round_trips().snapshot();
        snap.get("STREAM.CREATE").copied().unwrap_or(0) + snap.get("CONSUMER.CREATE").copied().unwrap_or(0)
    };
    assert_eq!(creates(&backend), 3, "topic stream, DLQ stream and consumer created");
    backend.provision(&s).await.expect("second provisioning succeeds");
    backend.subscription(&s).await.expect("and a third, through the SPI");
    assert_eq!(creates(&backend), 3, "nothing created or changed again");
    let info = consumer_info(&topic, &format!("{topic}--sub")).await;
    assert_eq!(info.config.ack_wait, Duration::from_secs(7), "AckWait = ack deadline");
    assert_eq!(info.config.max_deliver, 6, "max retries 4 = 5 attempts, +1 backstop");
    assert_eq!(info.config.deliver_policy, DeliverPolicy::New);
    assert_eq!(info.config.max_ack_pending, -1, "MaxAckPending unlimited: the runtime sizes its pulls");
    let mut stream = js().await.get_stream(&topic).await.unwrap();
    let c = stream.info().await.unwrap().config.clone();
    assert_eq!(c.subjects, vec![format!("{topic}.>")]);
    assert_eq!(c.duplicate_window, tidings_nats::EXACTLY_ONCE_WINDOW, "exactly-once de-duplication window");
    assert_eq!(c.max_age, tidings_nats::STREAM_RETENTION);
    js().await.get_stream(format!("{topic}--sub-dlq")).await.expect("the dead-letter stream exists");
}

#[tokio::test]
async fn verify_reports_a_mismatch_naming_resource_setting_and_both_values() {
    let topic = support::unique("verify");
    let declared = SubscriptionConfig::DEFAULT.with_ack_deadline(Duration::from_secs(30));
    let auto = support::backend(support::config()).await;
    auto.provision(&spec(&topic, TopicConfig::at_least_once(), declared)).await.unwrap();
    let verify = support::backend(support::provisioned(Provisioning::Verify)).await;
    verify.provision(&spec(&topic, TopicConfig::at_least_once(), declared)).await.expect("matching settings verify");
    let changed = declared.with_ack_deadline(Duration::from_secs(45));
    let e = verify.provision(&spec(&topic, TopicConfig::at_least_once(), changed)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Mismatch);
    let m = e.to_string();
    assert!(m.contains(&format!("{topic}--sub")) && m.contains("ack_wait"), "{m}");
    assert!(m.contains("30s") && m.contains("45s"), "{m}");
    let e = verify.provision(&spec(&topic, TopicConfig::exactly_once(), declared)).await.unwrap_err();
    assert!(e.kind() == ErrorKind::Mismatch && e.to_string().contains("duplicate_window"), "{e}");
    let missing = TopicSpec::new("x", support::unique("missing"), TopicConfig::at_least_once());
    let e = verify.topic(&missing).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(&missing.resource), "{e}");
    assert_eq!(verify.round_trips().snapshot().get("STREAM.CREATE"), None, "verify creates nothing");
}

/// Sets a consumer's `MaxAckPending` through the JetStream API, as tidings 0.1 (or an operator) left it.
async fn set_max_ack_pending(stream: &str, name: &str, max_ack_pending: i64) {
    let mut config = consumer_info(stream, name).await.config;
    config.max_ack_pending = max_ack_pending;
    let body = serde_json::json!({ "stream_name": stream, "config": config });
    let r: Response<async_nats::jetstream::consumer::Info> =
        js().await.request(format!("CONSUMER.CREATE.{stream}.{name}"), &body).await.unwrap();
    match r {
        Response::Ok(i) => assert_eq!(i.config.max_ack_pending, max_ack_pending),
        Response::Err { error } => panic!("consumer {name} update: {error}"),
    }
}

/// A consumer that tidings 0.1 made (`MaxAckPending` = max(1000, 10 x max concurrency)) still verifies; a smaller
/// finite one is a mismatch naming both; `auto` updates either to unlimited (-1), and the subscription then works.
#[tokio::test]
async fn a_finite_max_ack_pending_of_0_1_verifies_and_auto_makes_it_unlimited() {
    let topic = support::unique("ackpending");
    let s = spec(&topic, TopicConfig::at_least_once(), SubscriptionConfig::DEFAULT.with_max_concurrency(200));
    let consumer = format!("{topic}--sub");
    let auto = support::backend(support::config()).await;
    auto.provision(&s).await.unwrap();
    set_max_ack_pending(&topic, &consumer, 2000).await;
    let verify = support::backend(support::provisioned(Provisioning::Verify)).await;
    verify.provision(&s).await.expect("0.1's MaxAckPending (10 x 200) verifies");
    set_max_ack_pending(&topic, &consumer, 1999).await;
    let e = verify.provision(&s).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Mismatch, "{e}");
    let m = e.to_string();
    assert!(m.contains(&consumer) && m.contains("max_ack_pending") && m.contains("1999"), "{m}");
    assert!(m.contains("unlimited") && m.contains("2000"), "{m}");
    let fresh = support::backend(support::config()).await;
    fresh.provision(&s).await.expect("auto converges the consumer");
    assert_eq!(consumer_info(&topic, &consumer).await.config.max_ack_pending, -1);
    let creates = fresh.round_trips().snapshot().get("CONSUMER.CREATE").copied();
    assert_eq!(creates, Some(1), "one consumer update");
    verify.provision(&s).await.expect("unlimited verifies");
    let bus = Bus::new(Arc::new(fresh));
    let config = SubscriptionConfig::DEFAULT.with_max_concurrency(200);
    assert_eq!(one_round_trip(&bus, &topic, config, "after the update").await, vec!["after the update".to_string()]);
    bus.shutdown(Duration::from_secs(5)).await;
}

/// Subscribes `sub` to `topic`, publishes one event with this text and returns what the handler got within 20 s.
async fn one_round_trip(bus: &Bus, topic: &str, config: SubscriptionConfig, text: &str) -> Vec<String> {
    let t = Topic::<Event>::new(Box::leak(topic.to_string().into_boxed_str()), TopicConfig::at_least_once());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    bus.subscribe(&t, "sub", config, move |m: Message<Event>| {
        g.lock().unwrap().push(m.text.clone());
        async { Ok(()) }
    })
    .await
    .unwrap();
    t.publish(bus, &Event { text: text.into() }).await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().is_empty() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = got.lock().unwrap().clone();
    got
}

#[tokio::test]
async fn provisioning_off_makes_no_api_calls_and_a_missing_stream_is_reported_on_publish() {
    let topic = support::unique("off");
    let s = spec(&topic, TopicConfig::at_least_once(), SubscriptionConfig::DEFAULT);
    support::backend(support::config()).await.provision(&s).await.unwrap();
    let off = support::backend(support::provisioned(Provisioning::Off)).await;
    let bus = Bus::new(Arc::new(off.clone()));
    assert_eq!(one_round_trip(&bus, &topic, SubscriptionConfig::DEFAULT, "hi").await, vec!["hi".to_string()]);
    let api: Vec<_> = off
        .round_trips()
        .snapshot()
        .into_keys()
        .filter(|k| k.starts_with("STREAM") || k.starts_with("CONSUMER"))
        .collect();
    assert!(api.is_empty(), "off made JetStream API calls: {api:?}");
    let nowhere = TopicSpec::new("n", support::unique("nowhere"), TopicConfig::at_least_once());
    let driver = off.topic(&nowhere).await.expect("off trusts the name");
    let m = tidings_core::backend::OutgoingMessage::new(
        tidings_core::MessageId::generate(),
        bytes::Bytes::from_static(b"{}"),
        Default::default(),
        None,
        std::time::SystemTime::now(),
    );
    let report = driver.publish(&[m]).await.expect("the call itself works");
    let e = &report.failures()[0].1;
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(!e.is_retryable() && e.to_string().contains(&nowhere.resource), "{e}");
    bus.shutdown(Duration::from_secs(5)).await;
}

/// Id, attempt and `origin` attribute of a delivery.
type Seen = (String, u32, Option<String>);

/// A producer that knows nothing of tidings: a plain async-nats JetStream publish, with or without `Nats-Msg-Id`.
#[tokio::test]
async fn plain_client_messages_get_an_id_an_attempt_and_the_same_semantics() {
    let bus = Bus::new(Arc::new(support::backend(support::config()).await));
    let name: &'static str = Box::leak(support::unique("plain").into_boxed_str());
    let t = Topic::<Event>::new(name, TopicConfig::at_least_once());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let fails = Arc::new(AtomicU32::new(0));
    let (s, f) = (seen.clone(), fails.clone());
    let cfg = SubscriptionConfig::DEFAULT
        .with_ack_deadline(Duration::from_secs(2))
        .with_retry(tidings_core::RetryPolicy::new(Duration::from_millis(200), Duration::from_millis(200)));
    let sub = bus
        .subscribe(&t, "sub", cfg, move |m: Message<Event>| {
            s.lock().unwrap().push((m.meta.id.to_string(), m.meta.attempt, m.meta.attributes.get("origin").cloned()));
            let fail = m.text == "retry me" && m.meta.attempt == 1;
            if fail {
                f.fetch_add(1, SeqCst);
            }
            async move {
                if fail {
                    Err(HandlerError::retry("first attempt fails"))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    let js = js().await;
    let mut h = async_nats::HeaderMap::new();
    h.insert("origin", "legacy");
    let body = |text: &str| serde_json::to_vec(&Event { text: text.into() }).unwrap().into();
    js.publish_with_headers(format!("{name}.m"), h, body("retry me")).await.unwrap().await.unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "legacy-42");
    js.publish_with_headers(format!("{name}.orders.created"), h, body("with id")).await.unwrap().await.unwrap();
    js.publish(format!("{name}.m"), "not json at all".into()).await.unwrap().await.unwrap();
    js.publish(format!("{name}.m"), "{\"missing\": \"text\"}".into()).await.unwrap().await.unwrap();
    let dead = {
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let d = sub.dead_letters(10).await.unwrap();
            if d.len() >= 2 || tokio::time::Instant::now() > end {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(sub.wait_idle(Duration::from_secs(20)).await.unwrap(), "every message acked or dead-lettered");
    let seen = seen.lock().unwrap().clone();
    let retried: Vec<_> = seen.iter().filter(|(id, _, o)| o.as_deref() == Some("legacy") && !id.is_empty()).collect();
    assert_eq!(retried.len(), 2, "failed once, redelivered: {seen:?}");
    assert_eq!((retried[0].1, retried[1].1), (1, 2), "attempt = delivery count");
    assert_eq!(retried[0].0, retried[1].0, "one id across deliveries");
    assert!(retried[0].0.starts_with(name), "an id from stream and sequence: {}", retried[0].0);
    assert!(seen.iter().any(|(id, a, _)| id == "legacy-42" && *a == 1), "Nats-Msg-Id is the id: {seen:?}");
    assert_eq!(dead.len(), 2, "bad foreign input dead-lettered: {dead:?}");
    for d in &dead {
        assert!(d.reason.contains("poison") && d.attempts == 1, "{d:?}");
    }
    assert_eq!(fails.load(SeqCst), 1);
    assert_eq!(sub.backlog().await.unwrap(), Some(0), "the backlog is read from the consumer");
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_size_limit_is_the_servers_max_payload() {
    let backend = support::backend(support::config()).await;
    let limit = backend.capabilities().max_message_size;
    assert_eq!(limit, backend.max_payload() - tidings_nats::METADATA_RESERVE);
    assert!(backend.max_payload() >= 1024 * 1024, "the server's max_payload: {}", backend.max_payload());
    let bus = Bus::new(Arc::new(backend));
    let t = Topic::<Event>::new(Box::leak(support::unique("limit").into_boxed_str()), TopicConfig::at_least_once());
    // Exactly at the limit, with attributes: the server takes it.
    let text = "x".repeat(limit - "{\"text\":\"\"}".len() - "source".len() - "web".len());
    let opts = tidings_core::PublishOptions::new().attribute("source", "web");
    t.publish_with(&bus, &Event { text: text.clone() }, opts).await.expect("a message at the limit is accepted");
    let opts = tidings_core::PublishOptions::new().attribute("source", "web");
    let e = t.publish_with(&bus, &Event { text: text + "x" }, opts).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MessageTooLarge, "{e}");
}

/// The runtime dead-letters itself; `MaxDeliver` and its advisory are the backstop for a consumer that never gets to
/// decide (one that crashes on every delivery).
#[tokio::test]
async fn a_consumer_that_never_settles_ends_in_the_dlq_through_the_max_deliveries_backstop() {
    let backend = support::backend(support::config()).await;
    let name: &'static str = Box::leak(support::unique("backstop").into_boxed_str());
    let t = Topic::<Event>::new(name, TopicConfig::at_least_once());
    let cfg = SubscriptionConfig::DEFAULT
        .with_ack_deadline(Duration::from_secs(1))
        .with_max_retries(tidings_core::RetryPolicy::NO_RETRIES);
    let bus = Bus::new(Arc::new(backend.clone()));
    let driver = backend.subscription(&bus.subscription_spec(&t, "sub", cfg)).await.unwrap();
    t.publish(&bus, &Event { text: "crash".into() }).await.unwrap();
    let (mut receives, mut dead) = (0, Vec::new());
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while dead.is_empty() && tokio::time::Instant::now() < end {
        receives += driver.receive(1, Duration::from_secs(1)).await.unwrap().len();
        dead = tidings_core::dead_letter::peek(&*driver.clone().dead_letter_queue().unwrap(), 10).await.unwrap();
    }
    assert_eq!(dead.len(), 1, "moved to the DLQ after MaxDeliver deliveries");
    assert_eq!(receives, 2, "max retries 0 = 1 attempt; MaxDeliver allows one more");
    assert_eq!(dead[0].decode::<Event>().unwrap(), Event { text: "crash".into() });
    assert_eq!(dead[0].attempts, 2);
    assert!(dead[0].reason.contains("MaxDeliver"), "{}", dead[0].reason);
}

/// Core retries a dead-letter step that failed (an answer lost on the way back, say): a restore or a delete tried
/// again after it took effect copies nothing twice and does not fail.
#[tokio::test]
async fn a_restore_or_delete_tried_again_moves_nothing_twice() {
    let backend = support::backend(support::config()).await;
    let name: &'static str = Box::leak(support::unique("again").into_boxed_str());
    let t = Topic::<Event>::new(name, TopicConfig::at_least_once());
    let bus = Bus::new(Arc::new(backend.clone()));
    let driver = backend.subscription(&bus.subscription_spec(&t, "sub", SubscriptionConfig::DEFAULT)).await.unwrap();
    for text in ["a", "b"] {
        t.publish(&bus, &Event { text: text.into() }).await.unwrap();
    }
    let mut got = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 2 && tokio::time::Instant::now() < end {
        got.extend(driver.receive(2, Duration::from_secs(1)).await.unwrap());
    }
    let requests = got.into_iter().map(|m| tidings_core::backend::DeadLetterRequest::new(m, "rejected")).collect();
    driver.dead_letter(requests).await.unwrap();
    let q = driver.clone().dead_letter_queue().expect("the dead-letter stream is offered");
    let mut letters = q.read(None, 10).await.unwrap().letters;
    letters.sort_by_key(|h| h.letter.decode::<Event>().unwrap().text);
    let [a, b]: [tidings_core::backend::HeldLetter; 2] = letters.try_into().expect("a and b are dead letters");
    for attempt in ["the first time", "tried again"] {
        q.restore(vec![a.clone()]).await.unwrap_or_else(|e| panic!("restore of a, {attempt}: {e}"));
        q.delete(vec![b.handle.clone()]).await.unwrap_or_else(|e| panic!("delete of b, {attempt}: {e}"));
    }
    assert!(q.read(None, 10).await.unwrap().letters.is_empty(), "both left the dead-letter stream");
    let mut stream = js().await.get_stream(name).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 3, "the two published and one redrive copy");
}
