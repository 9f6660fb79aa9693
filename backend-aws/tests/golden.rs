//! Golden wire fixtures of the AWS backend (SNS + SQS on LocalStack): what tidings stores in a subscription's SQS
//! queue (raw delivery from SNS: body, message attributes, FIFO group and de-duplication ids), in its dead-letter
//! queue, and what a redrive sends back. See `tests/golden_support/mod.rs` at the workspace root for the scheme;
//! record with `TIDINGS_WRITE_GOLDEN=1 cargo test -p tidings-aws --test golden`.

#[path = "../../tests/golden_support/mod.rs"]
mod golden;
mod support;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName as Sys};
use golden::{Case, Fixture};
use serde_json::{json, Map, Value};
use tidings_core::admin::{Operator, Pace};
use tidings_core::{Bus, SubscriptionConfig};

const BACKEND: &str = "aws";

async fn bus(prefix: &str) -> Bus {
    let backend = support::backend(support::config()).await;
    Bus::builder(Arc::new(backend)).settings(golden::settings(prefix, "")).build()
}

async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&support::sdk().await)
}

/// The queue names of the case's subscription (`.fifo` on ordered and exactly-once topics).
fn queues(prefix: &str, case: &Case) -> (String, String) {
    let fifo = if case.ordered || case.exactly_once { ".fifo" } else { "" };
    let base = format!("{prefix}orders--{}", golden::SUBSCRIPTION);
    (format!("{base}{fifo}"), format!("{base}-dlq{fifo}"))
}

async fn url(sqs: &aws_sdk_sqs::Client, queue: &str) -> String {
    let out = sqs.get_queue_url().queue_name(queue).send().await.unwrap_or_else(|e| panic!("queue {queue}: {e:?}"));
    out.queue_url().unwrap().to_string()
}

/// The next message of `queue` as stored, left visible (visibility 0), within the patience.
async fn raw_message(sqs: &aws_sdk_sqs::Client, queue: &str) -> Value {
    let url = url(sqs, queue).await;
    golden::eventually(&format!("a message in SQS queue {queue}"), || async {
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(0)
            .message_attribute_names("All")
            .message_system_attribute_names(Sys::All)
            .send()
            .await
            .expect("ReceiveMessage");
        let m = out.messages().first()?.clone();
        let mut attributes = Map::new();
        for (k, v) in m.message_attributes().into_iter().flatten() {
            attributes.insert(k.clone(), json!({ "DataType": v.data_type(), "StringValue": v.string_value() }));
        }
        let sys = m.attributes().cloned().unwrap_or_default();
        Some(json!({
            "queue": queue,
            "Body": m.body(),
            "MessageAttributes": attributes,
            "MessageGroupId": sys.get(&Sys::MessageGroupId),
            "MessageDeduplicationId": sys.get(&Sys::MessageDeduplicationId),
        }))
    })
    .await
}

/// Publishes the case with today's tidings and reads what SQS stores: the subscription's queue, its dead-letter
/// queue, or (after a redrive) its queue again.
async fn record(case: Case) -> Fixture {
    let prefix = golden::fresh_prefix();
    let bus = bus(&prefix).await;
    let sqs = sqs().await;
    let (queue, dlq) = queues(&prefix, &case);
    let (sub, _rx) = golden::subscribe(&bus, &case, SubscriptionConfig::DEFAULT).await;
    if !case.dead_letter {
        // Provisioned, then stopped: the message stays in the queue for the plain client.
        sub.shutdown(Duration::from_secs(5)).await;
    }
    case.publish(&bus).await;
    let raw = if case.dead_letter {
        let dead = raw_message(&sqs, &dlq).await;
        sub.shutdown(Duration::from_secs(5)).await;
        if case.redrive {
            assert_eq!(sub.redrive_all().await.expect("redrive"), 1);
            raw_message(&sqs, &queue).await
        } else {
            dead
        }
    } else {
        raw_message(&sqs, &queue).await
    };
    bus.shutdown(Duration::from_secs(5)).await;
    let meta = golden::wire_meta(raw["MessageAttributes"]["tidings"]["StringValue"].as_str().unwrap());
    Fixture::new(BACKEND, &case, &prefix, &meta.id, meta.ts, raw).with_stored_trace(meta.trace.as_ref())
}

/// Sends the fixture's raw message with the plain SQS client into a fresh subscription's queue (or dead-letter
/// queue) and checks what tidings reads from it.
async fn decode(f: Fixture) {
    let case = *CASES.iter().find(|c| c.name == f.case).expect("a known case");
    let prefix = golden::fresh_prefix();
    let bus = bus(&prefix).await;
    let sqs = sqs().await;
    let receiving = Case { dead_letter: false, ..case };
    let (sub, mut rx) = golden::subscribe(&bus, &receiving, SubscriptionConfig::DEFAULT).await;
    inject(&sqs, &golden::reprefix(&f.raw, &f.prefix, &prefix)).await;
    golden::assert_decoded(&bus, &case, &f, &sub, &mut rx).await;
}

/// Sends a fixture's raw message (reprefixed) with the plain SQS client into its queue.
async fn inject(sqs: &aws_sdk_sqs::Client, raw: &Value) {
    let queue = raw["queue"].as_str().unwrap();
    let mut send = sqs.send_message().queue_url(url(sqs, queue).await).message_body(raw["Body"].as_str().unwrap());
    for (k, v) in raw["MessageAttributes"].as_object().unwrap() {
        let value = MessageAttributeValue::builder()
            .data_type(v["DataType"].as_str().unwrap())
            .set_string_value(v["StringValue"].as_str().map(str::to_string))
            .build()
            .unwrap();
        send = send.message_attributes(k, value);
    }
    send = send
        .set_message_group_id(raw["MessageGroupId"].as_str().map(str::to_string))
        .set_message_deduplication_id(raw["MessageDeduplicationId"].as_str().map(str::to_string));
    send.send().await.expect("SendMessage of the fixture");
}

const CASES: [Case; 8] = [
    golden::PLAIN,
    golden::ATTRIBUTES,
    golden::ORDERING_KEY,
    golden::TRACE,
    golden::EXACTLY_ONCE_CASE,
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
async fn golden_ordering_key_on_a_fifo_topic() {
    golden::run(golden::ORDERING_KEY, record, decode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_trace_context() {
    golden::run(golden::TRACE, record, decode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_exactly_once_on_a_fifo_topic() {
    golden::run(golden::EXACTLY_ONCE_CASE, record, decode).await;
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

/// The operator's redrive (the CLI, the dashboard) writes the copy the `Subscription` handle's redrive writes, the
/// fixture `redrive.json`, trace context kept: the dead letter of `dead_letter.json` is injected into a fresh
/// dead-letter queue and redriven through `Operator::redrive`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_redrive_copy_by_the_operator() {
    let (dead, want) = (golden::read("dead_letter"), golden::read("redrive"));
    let prefix = golden::fresh_prefix();
    let bus = bus(&prefix).await;
    let sqs = sqs().await;
    let (sub, _rx) = golden::subscribe(&bus, &golden::DEAD_LETTER, SubscriptionConfig::DEFAULT).await;
    sub.shutdown(Duration::from_secs(5)).await;
    inject(&sqs, &golden::reprefix(&dead.raw, &dead.prefix, &prefix)).await;
    let op = Operator::new(&bus);
    let moved = op.redrive("orders", golden::SUBSCRIPTION, &|_| true, &Pace::unlimited()).await.expect("redrive");
    assert_eq!(moved, 1);
    let raw = raw_message(&sqs, &queues(&prefix, &golden::REDRIVE).0).await;
    let meta = golden::wire_meta(raw["MessageAttributes"]["tidings"]["StringValue"].as_str().unwrap());
    assert_eq!((meta.id.as_str(), meta.ts), (dead.decoded.id.as_str(), dead.decoded.publish_time_us));
    let today = Fixture::new(BACKEND, &golden::REDRIVE, &prefix, &meta.id, meta.ts, raw);
    golden::assert_same_wire("redrive", &want, &today, &[]);
    assert!(op.dead_letters("orders", golden::SUBSCRIPTION, 10).await.unwrap().is_empty(), "the dead letter is gone");
    bus.shutdown(Duration::from_secs(5)).await;
}
