//! Bad input is refused with a clear error: invalid names, configs, publish options and batches, duplicate
//! subscriptions, configs the backend cannot keep, and messages over the size limit.
#![allow(missing_docs)]

use std::time::Duration;

use super::support::{logging, sub_config, topic, Event, Log};
use super::Harness;
use tidings_core::{ErrorKind, PublishOptions, RetryPolicy, SubscriptionConfig, TopicConfig};

pub async fn invalid_names_are_rejected<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    for bad in ["Signups", "1signups", "sign_ups", "signups-", ""] {
        let topic = tidings_core::Topic::<Event>::new(
            Box::leak(bad.to_string().into_boxed_str()),
            TopicConfig::at_least_once(),
        );
        let e = topic.publish(&bus, &Event::new(1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains(&format!("topic name {bad:?}")), "{e}");
        assert!(e.to_string().contains("^[a-z]([-a-z0-9]*[a-z0-9])?$"), "{e}");
    }
    let topic = topic::<Event>("names", TopicConfig::at_least_once());
    for bad in ["Email", "e mail", &"e".repeat(64)] {
        let e = bus.subscribe(&topic, bad, sub_config(&t, 5), logging(&Log::default())).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains(&format!("subscription name {bad:?}")), "{e}");
    }
}

pub async fn invalid_subscription_configs_are_rejected<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("configs", TopicConfig::at_least_once());
    let base = sub_config(&t, 5);
    let cases: Vec<(SubscriptionConfig, &str)> = vec![
        (base.with_ack_deadline(Duration::ZERO), "ack_deadline"),
        (base.with_message_retention(Duration::ZERO), "message_retention"),
        (base.with_max_concurrency(0), "max_concurrency"),
        (base.with_retry(RetryPolicy::new(Duration::ZERO, Duration::from_secs(1))), "retry.min_backoff"),
        (
            base.with_retry(RetryPolicy::new(Duration::from_secs(5), Duration::from_secs(1))),
            "min_backoff must be <= max_backoff",
        ),
    ];
    for (cfg, needle) in cases {
        let e = bus.subscribe(&topic, "sub", cfg, logging(&Log::default())).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let m = e.to_string();
        assert!(m.contains(needle) && m.contains("\"sub\"") && m.contains(topic.name()), "{m}");
    }
}

pub async fn duplicate_subscription_is_rejected<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let first = topic::<Event>("dup-other", TopicConfig::at_least_once());
    let topic = topic::<Event>("dup", TopicConfig::at_least_once());
    bus.subscribe(&topic, "email", sub_config(&t, 5), logging(&Log::default())).await.unwrap();
    let e = bus.subscribe(&topic, "email", sub_config(&t, 5), logging(&Log::default())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("\"email\"") && e.to_string().contains(topic.name()), "{e}");
    bus.subscribe(&first, "email", sub_config(&t, 5), logging(&Log::default())).await.expect("unique per topic only");
    let conflicting = tidings_core::Topic::<Event>::new(topic.name(), TopicConfig::exactly_once());
    let e = conflicting.publish(&bus, &Event::new(1)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "one topic name, two configs: {e}");
    bus.shutdown(t.patience).await;
}

pub async fn concurrent_duplicate_subscribe_is_rejected<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("dup-race", TopicConfig::at_least_once());
    // Both calls provision (on a broker, an await) before registering: only one may win.
    let (a, b) = tokio::join!(
        bus.subscribe(&topic, "email", sub_config(&t, 5), logging(&Log::default())),
        bus.subscribe(&topic, "email", sub_config(&t, 5), logging(&Log::default())),
    );
    let kinds: Vec<_> = [&a, &b].iter().map(|r| r.as_ref().err().map(|e| e.kind())).collect();
    assert!(
        kinds.contains(&None) && kinds.contains(&Some(ErrorKind::Conflict)),
        "exactly one of two concurrent subscribes with one name wins: {kinds:?}"
    );
    bus.shutdown(t.patience).await;
}

pub async fn unsupported_topic_configs_are_refused_at_declaration<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let caps = bus.capabilities().clone();
    for (has, config, capability) in [
        (caps.ordering, TopicConfig::at_least_once().ordered(), "ordering"),
        (caps.exactly_once, TopicConfig::exactly_once(), "exactly_once"),
    ] {
        let topic = topic::<Event>("unsupported", config);
        let published = topic.publish(&bus, &Event::new(1)).await;
        let subscribed = bus.subscribe(&topic, "sub", sub_config(&t, 5), logging(&Log::default())).await;
        if has {
            published.unwrap();
            subscribed.unwrap();
            continue;
        }
        for e in [published.unwrap_err(), subscribed.unwrap_err()] {
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            assert!(e.to_string().contains(capability) && e.to_string().contains(topic.name()), "{e}");
        }
    }
    // A backlog limit the backend cannot keep is refused at subscribe, never ignored.
    let topic = topic::<Event>("unsupported-limit", TopicConfig::at_least_once());
    let limited = bus.subscribe(&topic, "sub", sub_config(&t, 5).with_max_backlog(10), logging(&Log::default())).await;
    if caps.bounded_backlog {
        limited.unwrap();
    } else {
        let e = limited.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("bounded_backlog") && e.to_string().contains("max_backlog = 10"), "{e}");
    }
    bus.shutdown(t.patience).await;
}

pub async fn oversized_message_is_rejected<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("too-big", TopicConfig::at_least_once());
    let log = Log::default();
    let sub = bus.subscribe(&topic, "sub", sub_config(&t, 5), logging(&log)).await.unwrap();
    let limit = bus.capabilities().max_message_size;
    let big = Event { n: 1, text: "x".repeat(limit) };
    let e = topic.publish(&bus, &big).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MessageTooLarge);
    let size = serde_json::to_vec(&big).unwrap().len();
    let m = e.to_string();
    assert!(m.contains(&size.to_string()) && m.contains(&limit.to_string()) && m.contains(topic.name()), "{m}");
    topic.publish(&bus, &Event::new(2)).await.unwrap();
    log.wait_for(1, t.patience).await;
    tokio::time::sleep(t.ack_deadline).await;
    assert_eq!(
        log.all().iter().map(|d| d.event.n).collect::<Vec<_>>(),
        vec![2],
        "nothing of the rejected message was sent"
    );
    drop(sub);
    bus.shutdown(t.patience).await;
}

pub async fn invalid_publish_options_are_rejected<H: Harness>(h: &H) {
    let (bus, _t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("options", TopicConfig::at_least_once());
    let ev = Event::new(1);
    let e = topic.publish_with(&bus, &ev, PublishOptions::new().ordering_key("user-1")).await.unwrap_err();
    assert!(e.to_string().contains("\"user-1\"") && e.to_string().contains("not ordered"), "{e}");
    let e = topic.publish_with(&bus, &ev, PublishOptions::new().attribute("tidings-id", "x")).await.unwrap_err();
    assert!(e.to_string().contains("\"tidings-id\"") && e.to_string().contains("reserved"), "{e}");
    let e = topic.publish_with(&bus, &ev, PublishOptions::new().attribute("", "x")).await.unwrap_err();
    assert!(e.to_string().contains("empty name"), "{e}");
    let max = bus.capabilities().max_attributes;
    let mut opts = PublishOptions::new();
    for i in 0..=max {
        opts = opts.attribute(format!("a{i}"), "v");
    }
    let e = topic.publish_with(&bus, &ev, opts).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains(&format!("{} attributes", max + 1)) && e.to_string().contains(&max.to_string()),
        "{e}"
    );
    for bad in ["", "has space", "caf\u{e9}", &"x".repeat(tidings_core::message::MAX_ID_LEN + 1)] {
        let opts = PublishOptions::new().id(tidings_core::MessageId::from(bad));
        let e = topic.publish_with(&bus, &ev, opts).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains(&format!("{bad:?}")) && e.to_string().contains("printable ASCII"), "{e}");
    }
    let longest = "o".repeat(tidings_core::message::MAX_ID_LEN);
    let id =
        topic.publish_with(&bus, &ev, PublishOptions::new().id(tidings_core::MessageId::from(longest.as_str()))).await;
    assert_eq!(id.unwrap().as_str(), longest, "the longest custom id is accepted and kept");
}

pub async fn invalid_batch_sends_nothing<H: Harness>(h: &H) {
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("bad-batch", TopicConfig::at_least_once());
    let log = Log::default();
    bus.subscribe(&topic, "sub", sub_config(&t, 5), logging(&log)).await.unwrap();
    let (good, bad) = (Event::new(1), Event::new(2));
    let batch = vec![(&good, PublishOptions::new()), (&bad, PublishOptions::new().attribute("tidings-x", "y"))];
    topic.publish_batch(&bus, batch).await.unwrap_err();
    topic.publish(&bus, &Event::new(3)).await.unwrap();
    log.wait_for(1, t.patience).await;
    tokio::time::sleep(t.ack_deadline).await;
    let ns: Vec<u64> = log.all().iter().map(|d| d.event.n).collect();
    assert_eq!(ns, vec![3], "a batch with one invalid message is not half-sent");
    bus.shutdown(t.patience).await;
}
