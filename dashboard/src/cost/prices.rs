//! List prices the estimator uses, each with its source and the date it was read. They are US list prices
//! (us-east-1 for AWS; Pub/Sub charges the same in every region) before free tiers, volume discounts and data
//! transfer; the estimate says so.

use serde::Serialize;

/// One price.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Price {
    /// Service (`SNS`, `SQS`, `Pub/Sub`).
    pub service: &'static str,
    /// What is billed.
    pub unit: &'static str,
    /// US dollars per unit.
    pub usd_per_unit: f64,
    /// How usage turns into units.
    pub rule: &'static str,
    /// Where the price was read.
    pub source: &'static str,
    /// When (the source's date).
    pub date: &'static str,
}

/// Bytes in a TiB (Pub/Sub prices throughput per TiB, 2^40 bytes).
pub const TIB: f64 = 1_099_511_627_776.0;

/// SNS standard topics: publish requests.
pub const SNS_PUBLISH: Price = Price {
    service: "SNS",
    unit: "request",
    usd_per_unit: 0.50 / 1e6,
    rule: "$0.50 per million publish requests (standard topics); each 64 KiB chunk of a request's payload is billed \
           as one request; deliveries to SQS queues are not charged; first million requests a month free (not \
           subtracted)",
    source: "https://aws.amazon.com/sns/pricing/ as quoted in https://www.factualminds.com/blog/amazon-sns-pricing-publishes-fanout-protocols/",
    date: "2026-06-13",
};

/// SQS standard queues: every API request.
pub const SQS_REQUEST: Price = Price {
    service: "SQS",
    unit: "request",
    usd_per_unit: 0.40 / 1e6,
    rule: "$0.40 per million requests (standard queues, first 100 billion a month; FIFO queues $0.50); every API \
           action is a request, empty receives included; each 64 KiB chunk of a request's payload is billed as one \
           request; first million requests a month free (not subtracted)",
    source: "https://aws.amazon.com/sqs/pricing/ as quoted in https://cloudburn.io/blog/amazon-sqs-pricing (prices of March 2026) and https://www.factualminds.com/blog/amazon-sqs-pricing-64kb-rule-fifo-vs-standard/",
    date: "2026-06-13",
};

/// Pub/Sub throughput (Message Delivery Basic).
pub const PUBSUB_THROUGHPUT: Price = Price {
    service: "Pub/Sub",
    unit: "byte",
    usd_per_unit: 40.0 / TIB,
    rule: "$40 per TiB of publish and delivery throughput; a minimum of 1000 bytes per publish, push or pull request; \
           other operations (acknowledge, modify ack deadline, admin) carry no throughput charge; first 10 GiB a \
           month free (not subtracted)",
    source: "https://cloud.google.com/pubsub/pricing",
    date: "2026-09-20",
};

/// Every price the estimator uses.
pub const ALL: [Price; 3] = [SNS_PUBLISH, SQS_REQUEST, PUBSUB_THROUGHPUT];

/// The price of a service, by the name a backend's [`tidings_core::backend::Priced`] gives it.
pub fn of_service(service: &str) -> Option<Price> {
    ALL.into_iter().find(|p| p.service == service)
}
