//! The `opentelemetry` feature: spans exported through `tracing-opentelemetry` into the SDK's in-memory exporter, with
//! the W3C propagator carrying the context through the message.
#![cfg(feature = "opentelemetry")]

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::SpanKind;
use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;
use serde::{Deserialize, Serialize};

mod common;
use tidings::{HandlerError, Message, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};
use tracing::Instrument;

#[derive(Debug, Serialize, Deserialize)]
struct Signup {
    user_id: u64,
}

static SIGNUPS: Topic<Signup> = Topic::new("otel-signups", TopicConfig::at_least_once());

fn attr(s: &SpanData, key: &str) -> Option<Value> {
    s.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.clone())
}

#[test]
fn consumer_spans_link_to_the_publish_through_the_w3c_propagator() {
    let (exporter, provider) = common::capture_spans();
    assert!(tidings::otel::install());
    assert!(!tidings::otel::install(), "a second install is refused");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let bus = tidings::local();
        let quick = SubscriptionConfig::default()
            .with_retry(RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(40)).with_max_retries(5));
        let attempts = Arc::new(AtomicU32::new(0));
        let a = attempts.clone();
        bus.subscribe(&SIGNUPS, "analytics", quick, move |m: Message<Signup>| {
            a.fetch_add(1, SeqCst);
            async move {
                if m.attempt() < 3 {
                    Err(HandlerError::retry("warehouse down"))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
        let no_retries = quick
            .with_retry(RetryPolicy::new(Duration::from_millis(10), Duration::from_millis(40)).with_max_retries(0));
        let email = bus
            .subscribe(&SIGNUPS, "email", no_retries, |_m: Message<Signup>| async {
                Err(HandlerError::retry("provider down"))
            })
            .await
            .unwrap();
        let signup = tracing::info_span!("signup");
        SIGNUPS.publish(&bus, &Signup { user_id: 42 }).instrument(signup).await.unwrap();
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        while (attempts.load(SeqCst) < 3 || email.dead_letters(10).await.unwrap().is_empty())
            && tokio::time::Instant::now() < end
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bus.shutdown(Duration::from_secs(5)).await;
    });
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let named = |n: &str| spans.iter().filter(|s| s.name == n).collect::<Vec<_>>();
    let signup = named("signup");
    let sends = named("send otel-signups");
    assert_eq!((signup.len(), sends.len()), (1, 1), "{:#?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    let send = sends[0];
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(send.parent_span_id, signup[0].span_context.span_id(), "send is a child of the request span");
    assert_eq!(attr(send, "messaging.destination.name"), Some(Value::from("otel-signups")));
    assert_eq!(attr(send, "messaging.system"), Some(Value::from("local")));
    let mut analytics = named("process analytics");
    analytics.sort_by_key(|s| attr(s, "tidings.delivery.attempt").map(|v| v.as_str().to_string()));
    assert_eq!(analytics.len(), 3, "one span per attempt");
    for (i, p) in analytics.iter().enumerate() {
        assert_eq!(p.span_kind, SpanKind::Consumer);
        assert_eq!(attr(p, "tidings.delivery.attempt"), Some(Value::I64(i as i64 + 1)));
        assert_eq!(attr(p, "messaging.destination.subscription.name"), Some(Value::from("analytics")));
        assert_eq!(p.links.links.len(), 1, "linked to the publish");
        let link = &p.links.links[0].span_context;
        assert_eq!(link.span_id(), send.span_context.span_id());
        assert_eq!(link.trace_id(), send.span_context.trace_id());
        assert_ne!(p.span_context.trace_id(), send.span_context.trace_id(), "a link, not a parent: a trace of its own");
        assert_eq!(attr(p, "error.type").is_some(), i < 2, "failed attempts carry error.type");
    }
    let email = named("process email");
    assert_eq!(email.len(), 1);
    let dead: Vec<_> = email[0]
        .events
        .events
        .iter()
        .filter(|e| {
            e.attributes.iter().any(|kv| kv.key.as_str() == "tidings.settle" && kv.value.as_str() == "dead_letter")
        })
        .collect();
    assert_eq!(dead.len(), 1, "the dead letter is an event of the last attempt: {:#?}", email[0].events);
}
