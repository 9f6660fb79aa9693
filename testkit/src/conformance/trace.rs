//! Trace context: the publish's span and each delivery attempt's span, and the links between them.
#![allow(missing_docs)]

use super::support::{sub_config, topic, wait_dead_letters, Event};
use super::Harness;
use tidings_core::{HandlerError, Message, TopicConfig};

/// A publish inside the application's span: its `send` span is a child of that span and the message carries its
/// context; each delivery attempt is a `process` span of its own (attempt, message id, subscription), linked to the
/// `send` span, current while the handler runs; nacks and the final dead letter are events in them.
pub async fn trace_context_links_each_attempt_to_the_publish<H: Harness>(h: &H) {
    use tracing::Instrument;
    let _exclusive = super::EXCLUSIVE.lock().await;
    let capture = super::capture::install();
    let (bus, t) = (h.bus().await, h.timing());
    let topic = topic::<Event>("traced", TopicConfig::at_least_once());
    let _watching = capture.watch(topic.name());
    let handler = |m: Message<Event>| async move {
        tracing::info!(test.attempt = m.attempt(), "handler running");
        Err::<(), _>(HandlerError::retry("warehouse down"))
    };
    let sub = bus.subscribe(&topic, "audit", sub_config(&t, 2), handler).await.unwrap();
    let request = tracing::info_span!("request", test.topic = topic.name());
    let id = topic.publish(&bus, &Event::new(1)).instrument(request).await.unwrap();
    let dead = wait_dead_letters(&sub, 1, t.patience).await;
    assert_eq!(dead.len(), 1, "the message is dead-lettered after 3 attempts");
    let spans = capture.spans_of(topic.name());
    let named = |name: &str| spans.iter().filter(|s| s.name == name).cloned().collect::<Vec<_>>();
    let requests = named("request");
    assert_eq!(requests.len(), 1, "captured: {spans:#?}");
    let sends = named("send");
    assert_eq!(sends.len(), 1, "one send span per publish: {sends:#?}");
    let send = &sends[0];
    assert_eq!(send.parent, Some(requests[0].index), "the send span is a child of the caller's span");
    assert_eq!(send.field("messaging.destination.name"), Some(topic.name()));
    assert_eq!(send.field("messaging.operation.type"), Some("send"));
    assert_eq!(send.field("messaging.message.id"), Some(id.as_str()));
    assert_eq!(send.field("messaging.system"), Some(&*bus.backend_info().producer_system));
    assert_eq!(send.field("otel.name").map(str::to_string), Some(format!("send {}", topic.name())));
    let mut process = named("process");
    process.sort_by_key(|s| s.field("tidings.delivery.attempt").and_then(|a| a.parse::<u32>().ok()));
    let attempts: Vec<&str> = process.iter().filter_map(|s| s.field("tidings.delivery.attempt")).collect();
    assert_eq!(attempts, vec!["1", "2", "3"], "one process span per attempt: {process:#?}");
    for (i, p) in process.iter().enumerate() {
        assert_eq!(p.field("otel.name"), Some("process audit"));
        assert_eq!(p.field("otel.kind"), Some("consumer"));
        assert_eq!(p.field("messaging.destination.name"), Some(topic.name()));
        assert_eq!(p.field("messaging.destination.subscription.name"), Some("audit"));
        assert_eq!(p.field("messaging.consumer.group.name"), Some("audit"));
        assert_eq!(p.field("messaging.operation.type"), Some("process"));
        assert_eq!(p.field("messaging.message.id"), Some(id.as_str()));
        assert_eq!(p.field("messaging.system"), Some(&*bus.backend_info().consumer_system));
        assert_eq!(p.field("error.type"), Some("handler_error"));
        assert_eq!(p.links, vec![send.index], "attempt {} links to the send span", i + 1);
        assert_eq!(p.parent, None, "linked, not parented, by default");
        let attempt = (i + 1).to_string();
        assert_eq!(p.events_with("test.attempt", &attempt).len(), 1, "the handler's event is inside its span: {p:#?}");
        let (nacks, dead) = (p.events_with("tidings.settle", "nack"), p.events_with("tidings.settle", "dead_letter"));
        if i < 2 {
            assert_eq!((nacks.len(), dead.len()), (1, 0), "attempt {attempt} is retried: {p:#?}");
        } else {
            assert_eq!((nacks.len(), dead.len()), (0, 1), "the last attempt is dead-lettered: {p:#?}");
            assert!(dead[0].get("reason").is_some_and(|r| r.contains("warehouse down")), "{:?}", dead[0]);
        }
    }
    bus.shutdown(t.patience).await;
}
