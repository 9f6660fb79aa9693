//! Golden wire fixtures of the GCP backend (Pub/Sub emulator): what tidings publishes to a topic (data, attributes
//! with `tidings`, ordering key), to a subscription's dead-letter topic, and what a redrive publishes back (addressed
//! to one subscription by `target`). Read through subscriptions of the test's own on those topics, with unary REST
//! pulls. See `tests/golden_support/mod.rs` at the workspace root for the scheme; record with
//! `TIDINGS_WRITE_GOLDEN=1 cargo test -p tidings-gcp --test golden`.
//!
//! An exactly-once topic publishes the same message (exactly-once is a setting of the subscription), so it has no
//! fixture of its own here.

#[path = "../../tests/golden_support/mod.rs"]
mod golden;
mod support;

use std::sync::Arc;
use std::time::Duration;

use golden::{Case, Fixture};
use google_cloud_pubsub::model::Message as GMessage;
use serde_json::{json, Value};
use tidings_core::{Bus, SubscriptionConfig};

const BACKEND: &str = "gcp";
const PROJECT: &str = "tidings-test";

async fn bus(prefix: &str) -> Bus {
    let backend = support::backend(support::config()).await;
    Bus::builder(Arc::new(backend)).settings(golden::settings(prefix, "")).build()
}

/// One call of the emulator's REST API.
async fn rest(method: reqwest::Method, path: &str, body: Value) -> Value {
    let url = format!("http://{}/v1/{path}", support::host());
    let response = reqwest::Client::new()
        .request(method, &url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn topic_path(name: &str) -> String {
    format!("projects/{PROJECT}/topics/{name}")
}

/// A subscription of the test's own on `topic`, to read what is published there.
async fn raw_subscription(name: &str, topic: &str, ordered: bool) -> String {
    let path = format!("projects/{PROJECT}/subscriptions/{name}");
    let body = json!({ "topic": topic_path(topic), "enableMessageOrdering": ordered, "ackDeadlineSeconds": 60 });
    rest(reqwest::Method::PUT, &path, body).await;
    path
}

/// The first message on `subscription` that `wanted` accepts, as published, within the patience.
async fn raw_message(subscription: &str, topic: &str, wanted: impl Fn(&GMessage) -> bool) -> Value {
    golden::eventually(&format!("a message on {subscription}"), || async {
        let out = rest(
            reqwest::Method::POST,
            &format!("{subscription}:pull"),
            json!({ "maxMessages": 10, "returnImmediately": true }),
        )
        .await;
        let received = out.get("receivedMessages")?.as_array()?.clone();
        let m = received
            .into_iter()
            .map(|r| serde_json::from_value::<GMessage>(r["message"].clone()).expect("a Pub/Sub message"))
            .find(|m| wanted(m))?;
        let attributes: std::collections::BTreeMap<_, _> = m.attributes.clone().into_iter().collect();
        Some(json!({
            "topic": topic_path(topic),
            "data": std::str::from_utf8(&m.data).expect("UTF-8 JSON"),
            "attributes": attributes,
            "orderingKey": m.ordering_key,
        }))
    })
    .await
}

fn meta(m: &GMessage) -> Option<tidings_core::backend::wire::WireMeta> {
    m.attributes.get("tidings").and_then(|v| tidings_core::backend::wire::WireMeta::decode(v))
}

/// Publishes the case with today's tidings and reads what Pub/Sub carries: on the topic, on the subscription's
/// dead-letter topic, or (after a redrive) the copy on the topic.
async fn record(case: Case) -> Fixture {
    let prefix = golden::fresh_prefix();
    let bus = bus(&prefix).await;
    let topic = format!("{prefix}orders");
    let dlq_topic = format!("{prefix}orders--{}-dlq", golden::SUBSCRIPTION);
    let (sub, _rx) = golden::subscribe(&bus, &case, SubscriptionConfig::DEFAULT).await;
    let on_topic = raw_subscription(&format!("{prefix}raw"), &topic, case.ordered).await;
    let on_dlq = raw_subscription(&format!("{prefix}raw-dlq"), &dlq_topic, case.ordered).await;
    case.publish(&bus).await;
    let raw = if case.dead_letter {
        let dead = raw_message(&on_dlq, &dlq_topic, |_| true).await;
        if case.redrive {
            sub.shutdown(Duration::from_secs(5)).await;
            assert_eq!(sub.redrive_all().await.expect("redrive"), 1);
            raw_message(&on_topic, &topic, |m| meta(m).is_some_and(|x| x.target.is_some())).await
        } else {
            dead
        }
    } else {
        raw_message(&on_topic, &topic, |_| true).await
    };
    bus.shutdown(Duration::from_secs(5)).await;
    let meta = golden::wire_meta(raw["attributes"]["tidings"].as_str().unwrap());
    Fixture::new(BACKEND, &case, &prefix, &meta.id, meta.ts, raw).with_stored_trace(meta.trace.as_ref())
}

/// Publishes the fixture's raw message with Google's own publisher client to its topic under a fresh prefix (the
/// topic, or the subscription's dead-letter topic) and checks what tidings reads from it.
async fn decode(f: Fixture) {
    let case = *CASES.iter().find(|c| c.name == f.case).expect("a known case");
    let prefix = golden::fresh_prefix();
    let bus = bus(&prefix).await;
    let receiving = Case { dead_letter: false, ..case };
    let (sub, mut rx) = golden::subscribe(&bus, &receiving, SubscriptionConfig::DEFAULT).await;
    let raw = golden::reprefix(&f.raw, &f.prefix, &prefix);
    let attributes: Vec<(String, String)> = raw["attributes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let mut m = GMessage::new().set_data(raw["data"].as_str().unwrap().as_bytes().to_vec()).set_attributes(attributes);
    if let Some(k) = raw["orderingKey"].as_str().filter(|k| !k.is_empty()) {
        m = m.set_ordering_key(k);
    }
    let publisher = support::plain_publisher().await.publisher(raw["topic"].as_str().unwrap()).build();
    publisher.publish(m).await.expect("Google's publisher publishes the fixture");
    golden::assert_decoded(&bus, &case, &f, &sub, &mut rx).await;
}

const CASES: [Case; 7] = [
    golden::PLAIN,
    golden::ATTRIBUTES,
    golden::ORDERING_KEY,
    golden::TRACE,
    golden::DEAD_LETTER,
    golden::DEAD_LETTER_ORDERED,
    golden::REDRIVE,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_plain() {
    golden::run(golden::PLAIN, record, decode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_attributes() {
    golden::run(golden::ATTRIBUTES, record, decode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_ordering_key() {
    golden::run(golden::ORDERING_KEY, record, decode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_trace_context() {
    golden::run(golden::TRACE, record, decode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_dead_letter() {
    golden::run(golden::DEAD_LETTER, record, decode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_dead_letter_ordered() {
    golden::run(golden::DEAD_LETTER_ORDERED, record, decode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_redrive_copy() {
    golden::run(golden::REDRIVE, record, decode).await;
}
