//! Golden wire fixtures of the NATS JetStream backend: what tidings stores in a topic's stream (subject, headers
//! `Nats-Msg-Id` and `tidings`, the application's headers, payload), in a subscription's dead-letter stream, and what
//! a redrive publishes back. See `tests/golden_support/mod.rs` at the workspace root for the scheme; record with
//! `TIDINGS_WRITE_GOLDEN=1 cargo test -p tidings-nats --test golden`.
//!
//! An exactly-once topic stores the same message (only the stream's de-duplication window differs), so it has no
//! fixture of its own here.

#[path = "../../tests/golden_support/mod.rs"]
mod golden;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use golden::{Case, Fixture};
use serde_json::{json, Value};
use tidings_core::{Bus, SubscriptionConfig};

const BACKEND: &str = "nats";

async fn bus(prefix: &str) -> Bus {
    let backend = support::backend(support::config()).await;
    Bus::builder(Arc::new(backend)).settings(golden::settings(prefix, "")).build()
}

async fn js() -> async_nats::jetstream::Context {
    support::require_server();
    async_nats::jetstream::new(async_nats::connect(support::url()).await.expect("connect to NATS"))
}

/// Message `seq` of `stream` as stored, within the patience.
async fn raw_message(js: &async_nats::jetstream::Context, stream: &str, seq: u64) -> Value {
    golden::eventually(&format!("message {seq} in stream {stream}"), || async {
        let s = js.get_stream_no_info(stream).await.ok()?;
        let m = s.get_raw_message(seq).await.ok()?;
        let mut headers = BTreeMap::new();
        for (k, values) in m.headers.iter() {
            let k: &str = k.as_ref();
            let values: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
            headers.insert(k.to_string(), json!(values));
        }
        Some(json!({
            "stream": stream,
            "subject": m.subject.as_str(),
            "headers": headers,
            "payload": std::str::from_utf8(&m.payload).expect("UTF-8 JSON"),
        }))
    })
    .await
}

/// Publishes the case with today's tidings and reads what JetStream stores: the topic's stream (which keeps
/// messages after their ack), the dead-letter stream, or (after a redrive) the topic's stream again.
async fn record(case: Case) -> Fixture {
    let prefix = golden::fresh_prefix();
    let bus = bus(&prefix).await;
    let js = js().await;
    let stream = format!("{prefix}orders");
    let (sub, mut rx) = golden::subscribe(&bus, &case, SubscriptionConfig::DEFAULT).await;
    let id = case.publish(&bus).await;
    golden::delivery(&mut rx, &id).await;
    let raw = if case.dead_letter {
        let dead = raw_message(&js, &format!("{prefix}orders--{}-dlq", golden::SUBSCRIPTION), 1).await;
        sub.shutdown(Duration::from_secs(5)).await;
        if case.redrive {
            assert_eq!(sub.redrive_all().await.expect("redrive"), 1);
            raw_message(&js, &stream, 2).await
        } else {
            dead
        }
    } else {
        raw_message(&js, &stream, 1).await
    };
    bus.shutdown(Duration::from_secs(5)).await;
    let meta = golden::wire_meta(raw["headers"]["tidings"][0].as_str().unwrap());
    Fixture::new(BACKEND, &case, &prefix, &meta.id, meta.ts, raw).with_stored_trace(meta.trace.as_ref())
}

/// Publishes the fixture's raw message with the plain JetStream client on its subject under a fresh prefix (the
/// topic's stream, or the dead-letter stream) and checks what tidings reads from it.
async fn decode(f: Fixture) {
    let case = *CASES.iter().find(|c| c.name == f.case).expect("a known case");
    let prefix = golden::fresh_prefix();
    let bus = bus(&prefix).await;
    let js = js().await;
    let receiving = Case { dead_letter: false, ..case };
    let (sub, mut rx) = golden::subscribe(&bus, &receiving, SubscriptionConfig::DEFAULT).await;
    let raw = golden::reprefix(&f.raw, &f.prefix, &prefix);
    let mut headers = async_nats::HeaderMap::new();
    for (k, values) in raw["headers"].as_object().unwrap() {
        for v in values.as_array().unwrap() {
            headers.append(k.as_str(), v.as_str().unwrap());
        }
    }
    let subject = raw["subject"].as_str().unwrap().to_string();
    let payload = bytes::Bytes::from(raw["payload"].as_str().unwrap().to_string());
    js.publish_with_headers(subject, headers, payload).await.unwrap().await.expect("the stream stores the fixture");
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
async fn golden_ordering_key_subject() {
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
