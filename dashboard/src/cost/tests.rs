//! The estimator against bills worked out by hand.

use std::time::{Duration, SystemTime};

use super::{estimate, Scrape, Usage};

fn close(got: Option<f64>, want: f64) {
    let got = got.expect("a priced line");
    assert!((got - want).abs() <= want * 1e-9, "got {got}, want {want}");
}

/// The backends the counters name, as they describe their pricing.
fn backends() -> Vec<tidings_core::backend::BackendInfo> {
    vec![tidings_aws::info(), tidings_gcp::info(), tidings_nats::info()]
}

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text).unwrap()
}

/// One hour on AWS, scaled by 720 to a 30-day month:
/// - orders: 100 PublishBatch calls of 10 messages of 1000 bytes (1 MB, well under 64 KiB each) = 100 requests,
///   72 000 a month at $0.50/M = $0.036;
/// - images: 10 PublishBatch calls of 200 000 bytes = ⌈2 000 000 / 65 536⌉ = 31 requests (30.5 chunks), 22 320 a
///   month = $0.01116;
/// - orders/billing: 3600 receives + 100 delete batches = 3700 requests, 2 664 000 a month at $0.40/M = $1.0656;
/// - 2 ListTopics for no topic: 1440 a month at $0.50/M = $0.00072. Total $1.11348.
#[test]
fn an_hour_on_aws_bills_requests_and_64_kib_chunks() {
    let s = scrape(
        r#"
tidings_api_calls_total{backend="aws",operation="sns:PublishBatch",topic="orders"} 100
tidings_api_bytes_total{backend="aws",operation="sns:PublishBatch",topic="orders"} 1000000
tidings_api_calls_total{backend="aws",operation="sns:PublishBatch",topic="images"} 10
tidings_api_bytes_total{backend="aws",operation="sns:PublishBatch",topic="images"} 2000000
tidings_api_calls_total{backend="aws",operation="sqs:ReceiveMessage",topic="orders",subscription="billing"} 3600
tidings_api_calls_total{backend="aws",operation="sqs:DeleteMessageBatch",topic="orders",subscription="billing"} 100
tidings_api_calls_total{backend="aws",operation="sqs:ChangeMessageVisibilityBatch",topic="orders",subscription="billing"} 0
tidings_api_calls_total{backend="aws",operation="sns:ListTopics"} 2
"#,
    );
    let e = estimate(&Usage::from_snapshot(&s, Duration::from_secs(3600)), &backends());
    close(e.topic("orders"), 0.036);
    close(e.topic("images"), 0.01116);
    close(e.subscription("orders", "billing"), 1.0656);
    let images = e.lines.iter().find(|l| l.topic.as_deref() == Some("images")).unwrap();
    assert_eq!(images.billed_per_month, 22_320.0);
    assert_eq!(images.calls_per_month, 7200.0);
    let none = e.lines.last().unwrap();
    assert_eq!((none.topic.as_deref(), none.service), (None, Some("SNS")));
    close(none.usd_per_month, 0.00072);
    close(Some(e.usd_per_month), 1.11348);
    assert_eq!(e.prices.iter().map(|p| p.service).collect::<Vec<_>>(), ["SNS", "SQS"]);
}

/// Ten minutes on Pub/Sub, scaled by 4320:
/// - topic t: 1000 publishes of 200 bytes = 200 000 bytes, but at least 1000 bytes each = 1 000 000 bytes,
///   4.32e9 a month at $40/TiB (2^40 bytes) = $0.157160684466362;
/// - t/s: acks and one stream carry no charge; delivery of what t published = the same $0.157160684466362;
/// - t/s2: its pulls carried 3 000 000 bytes (redeliveries), more than t published: 1.296e10 a month =
///   $0.471482053399086;
/// - NATS calls have no price.
#[test]
fn ten_minutes_on_pubsub_bill_throughput_with_the_1000_byte_minimum() {
    let s = scrape(
        r#"
tidings_api_calls_total{backend="gcp",operation="pubsub:Publish",topic="t"} 1000
tidings_api_bytes_total{backend="gcp",operation="pubsub:Publish",topic="t"} 200000
tidings_api_calls_total{backend="gcp",operation="pubsub:Acknowledge",topic="t",subscription="s"} 500
tidings_api_calls_total{backend="gcp",operation="pubsub:StreamingPull",topic="t",subscription="s"} 1
tidings_api_calls_total{backend="gcp",operation="pubsub:StreamingPull",topic="t",subscription="s2"} 1
tidings_api_bytes_total{backend="gcp",operation="pubsub:StreamingPull",topic="t",subscription="s2"} 3000000
tidings_api_calls_total{backend="nats",operation="PUB",topic="n"} 50
"#,
    );
    let e = estimate(&Usage::from_snapshot(&s, Duration::from_secs(600)), &backends());
    close(e.topic("t"), 0.157160684466362);
    close(e.subscription("t", "s"), 0.157160684466362);
    close(e.subscription("t", "s2"), 0.471482053399086);
    let nats = e.lines.iter().find(|l| l.backend == "nats").unwrap();
    assert_eq!((nats.usd_per_month, nats.service, nats.calls_per_month), (None, None, 216_000.0));
    assert_eq!(e.topic("n"), None);
    close(Some(e.usd_per_month), 0.157160684466362 * 2.0 + 0.471482053399086);
}

/// Two snapshots 60 s apart: 30 more receives (one counter reset to 5 counts 5), scaled by 43 200.
#[test]
fn a_window_between_two_snapshots_counts_the_difference() {
    let mut before = scrape(
        "tidings_api_calls_total{backend=\"aws\",operation=\"sqs:ReceiveMessage\",topic=\"o\",subscription=\"b\"} 70\n\
         tidings_api_calls_total{backend=\"aws\",operation=\"sqs:SendMessage\",topic=\"o\",subscription=\"b\"} 9\n",
    );
    let after = scrape(
        "tidings_api_calls_total{backend=\"aws\",operation=\"sqs:ReceiveMessage\",topic=\"o\",subscription=\"b\"} 100\n\
         tidings_api_calls_total{backend=\"aws\",operation=\"sqs:SendMessage\",topic=\"o\",subscription=\"b\"} 5\n",
    );
    before.at = after.at - Duration::from_secs(60);
    let u = Usage::between(&before, &after);
    assert_eq!(u.window, Duration::from_secs(60));
    assert_eq!(u.counters.iter().map(|c| c.calls).collect::<Vec<_>>(), [30.0, 5.0]);
    // 35 requests a minute = 1 512 000 a month at $0.40/M = $0.6048.
    close(estimate(&u, &backends()).subscription("o", "b"), 0.6048);
    assert!(SystemTime::now() >= after.at);
}
