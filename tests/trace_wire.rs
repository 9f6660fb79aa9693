//! Where trace context travels, for consumers that do not use tidings (README, Observability): a message published by
//! tidings inside a span and read with the plain SDK (SQS through `aws-sdk-sqs` against LocalStack, Pub/Sub through
//! `google-cloud-pubsub` against the emulator) carries a W3C `traceparent` naming the publish's span, on GCP with
//! `gcp.google_trace_attributes` also as `googclient_traceparent`; and a message a Google client library published
//! with `googclient_traceparent` gives tidings' consumer span its link.
#![cfg(all(feature = "opentelemetry", feature = "test-worker"))]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use serde::{Deserialize, Serialize};

mod common;
use tidings::{Message, Settings, SubscriptionConfig, Topic, TopicConfig};
use tidings_core::backend::{SubscriptionSpec, TopicSpec};
use tidings_core::Backend;
use tracing::Instrument;

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: u32,
}

/// Spans of every test in this process, exported as they end; tidings' propagator links consumer spans.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let (exporter, _provider) = common::capture_spans();
        tidings::otel::install();
        exporter
    })
}

/// The first finished span matching `pred`, waiting up to 30 s for it.
async fn finished_span(what: &str, pred: impl Fn(&SpanData) -> bool) -> SpanData {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = exporter().get_finished_spans().unwrap().into_iter().find(|s| pred(s)) {
            return s;
        }
        assert!(Instant::now() < end, "no {what} span");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn destination(s: &SpanData) -> Option<String> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == "messaging.destination.name")
        .map(|kv| kv.value.as_str().to_string())
}

/// The producer span of the publish to `topic`.
async fn send_span(topic: &str) -> SpanData {
    finished_span("send", |s| s.name == format!("send {topic}") && destination(s).as_deref() == Some(topic)).await
}

/// Checks a W3C `traceparent` (version-traceid-spanid-flags, lowercase hex, non-zero ids) and returns its ids.
fn traceparent(v: &str) -> (String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "version-traceid-spanid-flags: {v:?}");
    let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    assert!(parts[0] == "00" && hex(parts[3], 2), "version 00 and two hex digits of flags: {v:?}");
    assert!(hex(parts[1], 32) && parts[1].chars().any(|c| c != '0'), "a non-zero 16-byte trace id: {v:?}");
    assert!(hex(parts[2], 16) && parts[2].chars().any(|c| c != '0'), "a non-zero 8-byte span id: {v:?}");
    (parts[1].to_string(), parts[2].to_string())
}

/// Asserts that `tp` names the span `send`.
fn names_the_publish(tp: &str, send: &SpanData) {
    let (trace, span) = traceparent(tp);
    assert_eq!(trace, send.span_context.trace_id().to_string(), "the publish's trace id");
    assert_eq!(span, send.span_context.span_id().to_string(), "the publish's span id");
}

fn unique(base: &str) -> &'static str {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    Box::leak(format!("{base}-{:x}{}", nanos % 0xffff_ffff_ffff, std::process::id()).into_boxed_str())
}

/// A subscription `plain` on `topic` whose resources exist and which nothing in this process reads.
fn spec(topic: &str) -> SubscriptionSpec {
    let t = TopicSpec::new(topic, topic, TopicConfig::at_least_once());
    SubscriptionSpec::new(t, "plain", format!("{topic}--plain"), SubscriptionConfig::DEFAULT)
}

/// Publishes one event to `topic` inside a request span.
async fn publish(bus: &tidings::Bus, topic: &'static str) {
    let t = Topic::<Event>::new(topic, TopicConfig::at_least_once());
    t.publish(bus, &Event { n: 1 }).instrument(tracing::info_span!("request")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_reader_finds_the_publishs_traceparent_in_the_tidings_attribute() {
    exporter();
    let sdk = common::localstack_sdk().await;
    let backend = tidings::aws::AwsBackend::with_sdk_config(&sdk, tidings::aws::AwsConfig::default()).unwrap();
    let topic = unique("trace-sqs");
    backend.subscription(&spec(topic)).await.expect("the queue is provisioned and subscribed"); // never read here
    let bus = tidings::Bus::new(Arc::new(backend));
    publish(&bus, topic).await;
    let send = send_span(topic).await;

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs.get_queue_url().queue_name(format!("{topic}--plain")).send().await.unwrap();
    let url = url.queue_url().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .message_attribute_names("All")
            .wait_time_seconds(2)
            .send()
            .await
            .unwrap();
        if let Some(m) = out.messages().first() {
            break m.clone();
        }
        assert!(Instant::now() < end, "the message did not reach the queue");
    };
    let attr = message.message_attributes().and_then(|a| a.get("tidings")).expect("the tidings attribute");
    assert_eq!(attr.data_type(), "String");
    let meta: serde_json::Value = serde_json::from_str(attr.string_value().unwrap()).unwrap();
    names_the_publish(meta["trace"]["traceparent"].as_str().expect("trace.traceparent"), &send);
    bus.shutdown(Duration::from_secs(2)).await;
}

fn emulator() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| "127.0.0.1:8085".into())
}

async fn gcp_backend(google_trace_attributes: bool) -> tidings::gcp::GcpBackend {
    let toml = format!(
        "[gcp]\nproject_id = \"tidings-test\"\nendpoint = \"http://{}\"\ngoogle_trace_attributes = {google_trace_attributes}\n",
        emulator()
    );
    tidings::gcp::GcpBackend::from_settings(&Settings::from_toml(&toml).unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_reader_finds_the_traceparent_in_the_tidings_attribute_and_as_googclient_traceparent() {
    exporter();
    let backend = gcp_backend(true).await;
    let topic = unique("trace-pubsub");
    backend.provision(&spec(topic)).await.unwrap();
    let bus = tidings::Bus::new(Arc::new(backend));
    publish(&bus, topic).await;
    let send = send_span(topic).await;

    let subscriber = google_cloud_pubsub::client::Subscriber::builder()
        .with_endpoint(format!("http://{}", emulator()))
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    let mut stream = subscriber.subscribe(format!("projects/tidings-test/subscriptions/{topic}--plain")).build();
    let (m, handler) = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a message within 30 s")
        .expect("the stream is open")
        .expect("a message");
    handler.ack();
    let meta: serde_json::Value = serde_json::from_str(&m.attributes["tidings"]).unwrap();
    let tp = meta["trace"]["traceparent"].as_str().expect("trace.traceparent");
    names_the_publish(tp, &send);
    assert_eq!(m.attributes.get("googclient_traceparent").map(String::as_str), Some(tp), "{:?}", m.attributes);
    bus.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_client_librarys_googclient_traceparent_links_the_process_span() {
    exporter();
    // Read without configuration: gcp.google_trace_attributes only adds the attributes on publish.
    let bus = tidings::Bus::new(Arc::new(gcp_backend(false).await));
    let topic = unique("trace-foreign");
    let t = Topic::<Event>::new(topic, TopicConfig::at_least_once());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    bus.subscribe(&t, "sub", SubscriptionConfig::DEFAULT, move |m: Message<Event>| {
        let _ = tx.send((
            m.attribute("googclient_traceparent").map(str::to_string),
            m.attribute("producer").map(str::to_string),
        ));
        async { Ok(()) }
    })
    .await
    .unwrap();

    // Published as a Google client library with OpenTelemetry on would: no tidings attribute.
    let (trace, span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let base = google_cloud_pubsub::client::BasePublisher::builder()
        .with_endpoint(format!("http://{}", emulator()))
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    let publisher = base.publisher(format!("projects/tidings-test/topics/{topic}")).build();
    let m = google_cloud_pubsub::model::Message::new().set_data(br#"{"n":7}"#.to_vec()).set_attributes([
        ("producer", "google-client"),
        ("googclient_traceparent", &format!("00-{trace}-{span}-01")),
        ("googclient_tracestate", "vendor=1"),
    ]);
    publisher.publish(m).await.unwrap();
    let (seen_tp, producer) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().unwrap();
    assert_eq!(producer.as_deref(), Some("google-client"), "the application's attributes arrive");
    assert_eq!(seen_tp, None, "the trace attributes are the message's context, not the application's attributes");

    let process =
        finished_span("process", |s| s.name == "process sub" && destination(s).as_deref() == Some(topic)).await;
    assert_eq!(process.links.links.len(), 1, "linked to the producer's context");
    let link = &process.links.links[0].span_context;
    assert_eq!((link.trace_id().to_string(), link.span_id().to_string()), (trace.to_string(), span.to_string()));
    assert_eq!(link.trace_state().header(), "vendor=1");
    bus.shutdown(Duration::from_secs(2)).await;
}
