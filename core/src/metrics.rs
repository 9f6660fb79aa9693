//! tidings' metrics, through the [`metrics`] facade: whichever recorder the application installs
//! (Prometheus, OpenTelemetry, ...) receives them; with none installed they cost next to nothing. Names, units and
//! labels are listed on the book's Observability page; the constants below are the names.
//!
//! Handles are resolved once per topic or subscription, when its publisher or runner starts, so a recorder must be
//! installed before the bus is used. Timings (durations, latency) are taken only while a recorder is installed.

use std::time::{Duration, Instant, SystemTime};

use ::metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Unit};

pub(crate) mod backlog;
pub use backlog::DEFAULT_BACKLOG_INTERVAL;

/// Messages a publish call carried, by `outcome` (`ok` / `error`).
pub const SENT_MESSAGES: &str = "messaging.client.sent.messages";
/// Duration of a publish (`send`), receive (`receive`) or settle (`settle`) call, in seconds.
pub const OPERATION_DURATION: &str = "messaging.client.operation.duration";
/// Deliveries handed to a handler.
pub const CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
/// Handler run time, in seconds, by `outcome` (`ack` / `retry` / `dead_letter`).
pub const PROCESS_DURATION: &str = "messaging.process.duration";
/// Deliveries acked.
pub const ACKED: &str = "tidings.messages.acked";
/// Failed deliveries returned for another attempt.
pub const RETRIED: &str = "tidings.messages.retried";
/// Deliveries moved to the dead-letter queue, by `reason`.
pub const DEAD_LETTERED: &str = "tidings.messages.dead_lettered";
/// Dead letters moved back into their subscription.
pub const REDRIVEN: &str = "tidings.messages.redriven";
/// Time from publish to handler start, in seconds.
pub const DELIVERY_LATENCY: &str = "tidings.delivery.latency";
/// Handlers running now.
pub const IN_FLIGHT: &str = "tidings.handlers.in_flight";
/// Backend API calls (or server round trips), by `operation`.
pub const API_CALLS: &str = "tidings.api.calls";
/// Payload bytes the backend's API calls carried, by `operation`.
pub const API_BYTES: &str = "tidings.api.bytes";
/// Messages not yet acked or dead-lettered, sampled.
pub const BACKLOG: &str = "tidings.subscription.backlog";
/// Of the backlog, messages scheduled (published with a due time not reached yet, never delivered), sampled where the
/// backend can tell (the in-memory bus, SQL); never reported elsewhere.
pub const SCHEDULED: &str = "tidings.subscription.scheduled";
/// Age of the oldest message not yet acked, in seconds, sampled.
pub const OLDEST_UNACKED_AGE: &str = "tidings.subscription.oldest_unacked.age";
/// Messages in the dead-letter queue, sampled.
pub const DEAD_LETTERS: &str = "tidings.subscription.dead_letters";
/// Outbox rows not yet relayed, sampled by the relay.
pub const OUTBOX_PENDING: &str = "tidings.outbox.pending";
/// Age of the oldest outbox row not yet relayed, in seconds, sampled by the relay.
pub const OUTBOX_OLDEST_PENDING_AGE: &str = "tidings.outbox.oldest_pending.age";
/// Time from an outbox row's insert to its relay publish, in seconds.
pub const OUTBOX_RELAY_LAG: &str = "tidings.outbox.relay.lag";

/// The `reason` label values of [`DEAD_LETTERED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadReason {
    /// The handler failed on its last allowed attempt.
    HandlerError,
    /// The handler panicked on its last allowed attempt.
    Panic,
    /// The handler returned an unrecoverable error.
    Unrecoverable,
    /// The payload could not be decoded.
    Poison,
}

impl DeadReason {
    const ALL: [DeadReason; 4] = [Self::HandlerError, Self::Panic, Self::Unrecoverable, Self::Poison];

    /// The label value (also the span's `error.type`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::HandlerError => "handler_error",
            Self::Panic => "panic",
            Self::Unrecoverable => "unrecoverable",
            Self::Poison => "poison",
        }
    }
}

/// Whether a recorder with state is installed: the facade's no-op recorder is a unit struct. Decides whether the
/// clock is read for timings and whether gauges are sampled (for crates built on core, such as the outbox).
pub fn recording() -> bool {
    ::metrics::with_recorder(|r| std::mem::size_of_val(r) != 0)
}

/// Describes tidings' metrics (units and help texts) to the installed recorder. Call it once after installing one;
/// exporters such as Prometheus use the descriptions for `# HELP` lines and the `_seconds` suffix.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(SENT_MESSAGES, Unit::Count, "Messages published, by outcome");
    describe_histogram!(OPERATION_DURATION, Unit::Seconds, "Duration of publish, receive and settle calls");
    describe_counter!(CONSUMED_MESSAGES, Unit::Count, "Deliveries handed to a handler");
    describe_histogram!(PROCESS_DURATION, Unit::Seconds, "Handler run time, by outcome");
    describe_counter!(ACKED, Unit::Count, "Deliveries acked");
    describe_counter!(RETRIED, Unit::Count, "Failed deliveries returned for another attempt");
    describe_counter!(DEAD_LETTERED, Unit::Count, "Deliveries moved to the dead-letter queue, by reason");
    describe_counter!(REDRIVEN, Unit::Count, "Dead letters moved back into their subscription");
    describe_histogram!(DELIVERY_LATENCY, Unit::Seconds, "Time from publish to handler start");
    describe_gauge!(IN_FLIGHT, Unit::Count, "Handlers running now");
    describe_counter!(API_CALLS, Unit::Count, "Backend API calls or server round trips, by operation");
    describe_counter!(API_BYTES, Unit::Bytes, "Payload bytes carried by backend API calls, by operation");
    describe_gauge!(BACKLOG, Unit::Count, "Messages not yet acked or dead-lettered (sampled)");
    describe_gauge!(SCHEDULED, Unit::Count, "Messages of the backlog waiting for their delivery time (sampled)");
    describe_gauge!(OLDEST_UNACKED_AGE, Unit::Seconds, "Age of the oldest message not yet acked (sampled)");
    describe_gauge!(DEAD_LETTERS, Unit::Count, "Messages in the dead-letter queue (sampled)");
    describe_gauge!(OUTBOX_PENDING, Unit::Count, "Outbox rows not yet relayed (sampled)");
    describe_gauge!(OUTBOX_OLDEST_PENDING_AGE, Unit::Seconds, "Age of the oldest outbox row not yet relayed (sampled)");
    describe_histogram!(OUTBOX_RELAY_LAG, Unit::Seconds, "Time from an outbox row's insert to its relay publish");
}

/// A start time, taken only while a recorder is installed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started(Option<Instant>);

impl Started {
    /// No start time: nothing is timed.
    pub(crate) const NONE: Started = Started(None);

    pub(crate) fn elapsed(self) -> Option<Duration> {
        self.0.map(|t| t.elapsed())
    }
}

/// The handles of one topic's publisher.
#[derive(Debug)]
pub(crate) struct PublishMetrics {
    ok: Counter,
    error: Counter,
    duration: Histogram,
    timed: bool,
}

impl PublishMetrics {
    pub(crate) fn new(backend: &str, topic: &str) -> Self {
        let (b, t) = (backend.to_string(), topic.to_string());
        Self {
            ok: counter!(SENT_MESSAGES, "backend" => b.clone(), "topic" => t.clone(), "outcome" => "ok"),
            error: counter!(SENT_MESSAGES, "backend" => b.clone(), "topic" => t.clone(), "outcome" => "error"),
            duration: histogram!(OPERATION_DURATION, "backend" => b, "topic" => t, "operation" => "send"),
            timed: recording(),
        }
    }

    pub(crate) fn start(&self) -> Started {
        Started(self.timed.then(Instant::now))
    }

    /// `n` messages of one publish call ended with `ok`.
    pub(crate) fn sent(&self, n: usize, ok: bool, started: Started) {
        if n > 0 {
            if ok { &self.ok } else { &self.error }.increment(n as u64);
        }
        if let Some(d) = started.elapsed() {
            self.duration.record(d);
        }
    }
}

/// The handles of one running subscription.
#[derive(Debug)]
pub(crate) struct SubscriptionMetrics {
    consumed: Counter,
    acked: Counter,
    retried: Counter,
    dead: [Counter; DeadReason::ALL.len()],
    redriven: Counter,
    latency: Histogram,
    in_flight: Gauge,
    process: [Histogram; 3],
    receive: Histogram,
    settle: Histogram,
    timed: bool,
}

/// How a delivery attempt ended, for [`PROCESS_DURATION`]'s `outcome`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settled {
    Ack,
    Retry,
    DeadLetter(DeadReason),
}

impl SubscriptionMetrics {
    pub(crate) fn new(backend: &str, topic: &str, subscription: &str) -> Self {
        let labels = [("backend", backend), ("topic", topic), ("subscription", subscription)]
            .map(|(k, v)| ::metrics::Label::new(k, v.to_string()))
            .to_vec();
        let with = |k: &'static str, v: &'static str| {
            let mut l = labels.clone();
            l.push(::metrics::Label::new(k, v));
            l
        };
        let process = |v| histogram!(PROCESS_DURATION, with("outcome", v));
        Self {
            consumed: counter!(CONSUMED_MESSAGES, labels.clone()),
            acked: counter!(ACKED, labels.clone()),
            retried: counter!(RETRIED, labels.clone()),
            dead: DeadReason::ALL.map(|r| counter!(DEAD_LETTERED, with("reason", r.as_str()))),
            redriven: counter!(REDRIVEN, labels.clone()),
            latency: histogram!(DELIVERY_LATENCY, labels.clone()),
            in_flight: gauge!(IN_FLIGHT, labels.clone()),
            process: [process("ack"), process("retry"), process("dead_letter")],
            receive: histogram!(OPERATION_DURATION, with("operation", "receive")),
            settle: histogram!(OPERATION_DURATION, with("operation", "settle")),
            timed: recording(),
        }
    }

    pub(crate) fn start(&self) -> Started {
        Started(self.timed.then(Instant::now))
    }

    /// A handler is about to run for a message published at `published`.
    pub(crate) fn handler_started(&self, published: SystemTime) -> Started {
        self.consumed.increment(1);
        if !self.timed {
            return Started(None);
        }
        self.in_flight.increment(1.0);
        let now = Instant::now();
        self.latency.record(SystemTime::now().duration_since(published).unwrap_or_default());
        Started(Some(now))
    }

    /// The attempt begun at `started` ended so.
    pub(crate) fn settled(&self, how: Settled, started: Started) {
        let i = match how {
            Settled::Ack => {
                self.acked.increment(1);
                0
            }
            Settled::Retry => {
                self.retried.increment(1);
                1
            }
            Settled::DeadLetter(r) => {
                self.dead[r as usize].increment(1);
                2
            }
        };
        if let Some(d) = started.elapsed() {
            self.in_flight.decrement(1.0);
            self.process[i].record(d);
        }
    }

    pub(crate) fn received(&self, started: Started) {
        if let Some(d) = started.elapsed() {
            self.receive.record(d);
        }
    }

    pub(crate) fn settle_call(&self, started: Started) {
        if let Some(d) = started.elapsed() {
            self.settle.record(d);
        }
    }

    pub(crate) fn redriven(&self, n: usize) {
        self.redriven.increment(n as u64);
    }
}
