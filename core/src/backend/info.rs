//! What a backend is called, for people, for telemetry and for the bill: read by tracing, the CLI and the dashboard,
//! so none of them matches backend names.

use std::borrow::Cow;

/// A backend's names and how its API calls are billed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendInfo {
    /// Short name, as in `backend = "..."` / `TIDINGS_BACKEND` and its config section (`aws`).
    pub name: Cow<'static, str>,
    /// OpenTelemetry `messaging.system` of publish (producer) spans: the conventions' registered value where one
    /// exists (`aws.sns`), the backend's name otherwise.
    pub producer_system: Cow<'static, str>,
    /// OpenTelemetry `messaging.system` of receive and process (consumer) spans (`aws_sqs`, `gcp_pubsub`).
    pub consumer_system: Cow<'static, str>,
    /// Its state lives in one process (the in-memory bus): another process, such as the `tidings` CLI, cannot
    /// reach it.
    pub in_process: bool,
    /// Its config section has a `provisioning` key (`create`, `verify`, ...), which `tidings doctor` sets to
    /// `verify` so that a check creates nothing.
    pub provisioning: bool,
    /// Opening it provisions (the SQL backends create their tables), so `tidings doctor` always opens it with
    /// `provisioning = "verify"`.
    pub provisions_on_open: bool,
    /// How the API operations it counts ([`crate::backend::calls::ApiCalls`]) are billed, for the cost estimate; the first
    /// entry that matches an operation applies. Empty where calls have no price (the servers you run are the cost).
    pub pricing: &'static [Priced],
}

impl BackendInfo {
    /// A backend called `name` (also its `messaging.system`), with no price, whose state lives outside the process
    /// and which has no `provisioning` key.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name: Cow::Borrowed(name),
            producer_system: Cow::Borrowed(name),
            consumer_system: Cow::Borrowed(name),
            in_process: false,
            provisioning: false,
            provisions_on_open: false,
            pricing: &[],
        }
    }

    /// As [`BackendInfo::new`], for a name known at run time.
    pub fn named(name: impl Into<String>) -> Self {
        let name: String = name.into();
        Self {
            producer_system: Cow::Owned(name.clone()),
            consumer_system: Cow::Owned(name.clone()),
            name: Cow::Owned(name),
            ..Self::new("")
        }
    }

    /// With these `messaging.system` values for producer and consumer spans.
    pub fn with_messaging_system(mut self, producer: &'static str, consumer: &'static str) -> Self {
        self.producer_system = Cow::Borrowed(producer);
        self.consumer_system = Cow::Borrowed(consumer);
        self
    }

    /// Its state lives in this process only.
    pub fn in_process(mut self) -> Self {
        self.in_process = true;
        self
    }

    /// Its config section has a `provisioning` key; `on_open`: opening it provisions.
    pub fn with_provisioning(mut self, on_open: bool) -> Self {
        self.provisioning = true;
        self.provisions_on_open = on_open;
        self
    }

    /// Its API operations are billed so.
    pub fn with_pricing(mut self, pricing: &'static [Priced]) -> Self {
        self.pricing = pricing;
        self
    }

    /// How `operation` is billed: the first entry naming it exactly or, with a name ending in `:`, by prefix.
    pub fn priced(&self, operation: &str) -> Option<&'static Priced> {
        self.pricing
            .iter()
            .find(|p| p.operation == operation || (p.operation.ends_with(':') && operation.starts_with(p.operation)))
    }
}

/// How one API operation (or, by a name ending in `:`, a family of them) is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Priced {
    /// The operation as the backend counts it (`pubsub:Publish`), or a prefix ending in `:` (`sqs:`).
    pub operation: &'static str,
    /// The billed service, as the price list names it (`SNS`, `SQS`, `Pub/Sub`).
    pub service: &'static str,
    /// The unit the price applies to (per request, per byte, free, ...), so a cost estimate can multiply counters.
    pub billed: Billed,
}

impl Priced {
    /// `operation` billed by `service` as `billed`.
    pub const fn new(operation: &'static str, service: &'static str, billed: Billed) -> Self {
        Self { operation, service, billed }
    }
}

/// What a priced operation is billed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Billed {
    /// Requests, a request carrying more than `chunk_bytes` counting as one per started chunk (SNS, SQS: 64 KiB).
    Requests {
        /// Bytes billed as one request.
        chunk_bytes: u32,
    },
    /// Bytes published to a topic, each request at least `min_request_bytes` (Pub/Sub: 1000); every subscription
    /// of the topic is billed delivery of what it published. Calls made for a subscription (a redrive's copies)
    /// are billed as throughput of that subscription.
    Published {
        /// Least bytes billed per request.
        min_request_bytes: u32,
    },
    /// Bytes a subscription pulled: counted towards its delivery (billed as at least what its topic published).
    Pulled,
    /// Calls of the service with no price of their own (acks, admin calls).
    Free,
}
