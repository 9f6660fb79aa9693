//! Golden wire fixtures, shared by every backend's `tests/golden.rs` (included with `#[path]`; this directory is no
//! test target of its own).
//!
//! A fixture is one message as a broker stores it when tidings publishes it today: `raw` (the body, every attribute
//! or header with its value, ordering key, subject or group id, the relevant columns), what tidings was asked to
//! publish (`published`), and what tidings must decode from it (`decoded`: id, publish time, attributes, ordering
//! key, trace context, payload; a dead letter's reason and attempts). Each backend's test
//!
//! - records fixtures when `TIDINGS_WRITE_GOLDEN=1` (publish with tidings, read with the broker's plain client);
//! - checks, always: (a) the fixture's raw message, injected with the plain client into fresh resources, decodes
//!   through tidings to `decoded`; (b) publishing the same message with today's tidings stores the same raw form, with
//!   volatile values (ids, timestamps, random name prefixes) normalized, so a wire change fails with a diff.
//!
//! The trace context comes from a [`Propagator`] installed here: it injects [`TRACEPARENT`] / [`TRACESTATE`] into
//! the publishes made inside [`with_trace`], and records the context each consumer span is connected to, by message
//! id ([`received_trace`]), through a minimal `tracing` subscriber that enables tidings' `process` spans only.
#![allow(dead_code)]

mod compare;
mod trace;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tidings_core::trace::TraceContext;
use tidings_core::{
    Bus, DeadLetter, HandlerError, Message, PublishOptions, Subscription, SubscriptionConfig, Topic, TopicConfig,
};

/// The W3C `traceparent` the trace cases publish under (the example of the W3C recommendation).
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// The `tracestate` beside it.
pub const TRACESTATE: &str = "golden=1";
/// The dead-letter reason of the dead-letter cases' handler.
pub const REASON: &str = "golden: card declined";
/// Subscription name of every case.
pub const SUBSCRIPTION: &str = "billing";
/// Longest wait for a broker to show a message (a bound, not a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(45);

/// The payload of every case: a struct, so its JSON has a fixed field order whatever serde_json's features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order: u32,
    pub item: String,
}

pub fn order() -> Order {
    Order { order: 42, item: "book".into() }
}

pub static AT_LEAST_ONCE: Topic<Order> = Topic::new("orders", TopicConfig::at_least_once());
pub static ORDERED: Topic<Order> = Topic::new("orders", TopicConfig::at_least_once().ordered());
pub static EXACTLY_ONCE: Topic<Order> = Topic::new("orders", TopicConfig::exactly_once());

/// One golden case: what is published and which path it takes.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub covers: &'static str,
    pub ordered: bool,
    pub exactly_once: bool,
    pub attributes: &'static [(&'static str, &'static str)],
    pub key: Option<&'static str>,
    pub trace: bool,
    /// The handler dead-letters it (`HandlerError::unrecoverable(REASON)`); the fixture is the dead-letter copy.
    pub dead_letter: bool,
    /// Then it is redriven; the fixture is the redrive copy.
    pub redrive: bool,
}

const NONE: Case = Case {
    name: "",
    covers: "",
    ordered: false,
    exactly_once: false,
    attributes: &[],
    key: None,
    trace: false,
    dead_letter: false,
    redrive: false,
};

pub const PLAIN: Case =
    Case { name: "plain", covers: "a message without attributes on an at-least-once topic", ..NONE };
pub const ATTRIBUTES: Case = Case {
    name: "attributes",
    covers: "application attributes beside tidings' metadata",
    attributes: &[("source", "web"), ("tenant", "acme")],
    ..NONE
};
pub const ORDERING_KEY: Case = Case {
    name: "ordering_key",
    covers: "an ordering key on an ordered topic",
    ordered: true,
    key: Some("user-42"),
    ..NONE
};
pub const TRACE: Case = Case {
    name: "trace",
    covers: "the publish's trace context (traceparent, tracestate) in tidings' metadata",
    attributes: &[("source", "web")],
    trace: true,
    ..NONE
};
pub const EXACTLY_ONCE_CASE: Case =
    Case { name: "exactly_once", covers: "a message on an exactly-once topic", exactly_once: true, ..NONE };
pub const DEAD_LETTER: Case = Case {
    name: "dead_letter",
    covers: "the dead-letter copy of an unrecoverable failure: reason, attempts, attributes and trace context kept",
    attributes: &[("source", "web")],
    trace: true,
    dead_letter: true,
    ..NONE
};
pub const DEAD_LETTER_ORDERED: Case = Case {
    name: "dead_letter_ordered",
    covers: "the dead-letter copy of a message with an ordering key on an ordered topic",
    ordered: true,
    key: Some("user-42"),
    dead_letter: true,
    ..NONE
};
pub const REDRIVE: Case = Case {
    name: "redrive",
    covers: "the copy a redrive of a dead letter writes back for the subscription",
    attributes: &[("source", "web")],
    trace: true,
    dead_letter: true,
    redrive: true,
    ..NONE
};

impl Case {
    pub fn topic(&self) -> &'static Topic<Order> {
        match (self.ordered, self.exactly_once) {
            (true, _) => &ORDERED,
            (false, true) => &EXACTLY_ONCE,
            (false, false) => &AT_LEAST_ONCE,
        }
    }

    pub fn options(&self) -> PublishOptions {
        let mut o = PublishOptions::new();
        for (k, v) in self.attributes {
            o = o.attribute(*k, *v);
        }
        if let Some(k) = self.key {
            o = o.ordering_key(k);
        }
        o
    }

    pub fn trace_fields(&self) -> Option<BTreeMap<String, String>> {
        self.trace.then(|| {
            [("traceparent".to_string(), TRACEPARENT.to_string()), ("tracestate".to_string(), TRACESTATE.to_string())]
                .into()
        })
    }

    /// Publishes the case's message with tidings (inside the trace context when it has one).
    pub async fn publish(&self, bus: &Bus) -> String {
        let message = order();
        let publish = self.topic().publish_with(bus, &message, self.options());
        let id = match self.trace_fields() {
            Some(t) => with_trace(t, publish).await,
            None => publish.await,
        };
        id.expect("tidings publishes the case's message").to_string()
    }
}

/// A fresh resource name prefix (brokers outlive runs, so every run and case gets its own).
pub fn fresh_prefix() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("golden-{}-", &id[id.len() - 12..])
}

/// Settings with `name_prefix` (and whatever backend sections `extra` holds, TOML).
pub fn settings(prefix: &str, extra: &str) -> tidings_core::Settings {
    tidings_core::Settings::from_toml(&format!("name_prefix = \"{prefix}\"\n{extra}")).expect("golden settings")
}

// ---- the fixture file ----

/// One fixture file, `<crate>/tests/golden/<case>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixture {
    pub backend: String,
    pub case: String,
    pub covers: String,
    /// The name prefix the fixture was recorded under (replaced by a fresh one when it is injected again).
    pub prefix: String,
    pub topic: Value,
    /// What tidings was asked to publish.
    pub published: Value,
    /// What tidings must decode from `raw`.
    pub decoded: Decoded,
    /// The message as the broker stores it.
    pub raw: Value,
}

/// What tidings decodes from a fixture's raw message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decoded {
    pub id: String,
    pub publish_time_us: i64,
    pub attributes: BTreeMap<String, String>,
    pub ordering_key: Option<String>,
    pub trace: Option<BTreeMap<String, String>>,
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl Fixture {
    /// A fixture of `case` with the message tidings published (`id`, `ts` from its metadata) and its raw form.
    pub fn new(backend: &str, case: &Case, prefix: &str, id: &str, publish_time_us: i64, raw: Value) -> Self {
        Fixture {
            backend: backend.into(),
            case: case.name.into(),
            covers: case.covers.into(),
            prefix: prefix.into(),
            topic: json!({ "ordered": case.ordered, "exactly_once": case.exactly_once }),
            published: json!({
                "payload": order(),
                "attributes": case.attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
                "ordering_key": case.key,
                "trace": case.trace_fields(),
                "handler": if case.dead_letter { Value::from(format!("HandlerError::unrecoverable({REASON:?})")) } else { Value::from("Ok") },
                "then": if case.redrive { "redrive" } else { "" },
            }),
            decoded: Decoded {
                id: id.into(),
                publish_time_us,
                attributes: case.attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ordering_key: case.key.map(str::to_string).filter(|_| case.ordered),
                trace: case.trace_fields(),
                payload: serde_json::to_value(order()).unwrap(),
                // The runtime records an unrecoverable failure as `unrecoverable: <the handler's reason>`.
                reason: (case.dead_letter && !case.redrive).then(|| format!("unrecoverable: {REASON}")),
                attempts: (case.dead_letter && !case.redrive).then_some(1),
            },
            raw,
        }
    }
}

impl Fixture {
    /// The fixture with the trace context the stored message carries in tidings' metadata as what tidings must
    /// decode: the published one, on every copy (a dead letter's and a redrive's too).
    pub fn with_stored_trace(mut self, stored: Option<&TraceContext>) -> Self {
        let stored = stored.map(|t| t.fields().clone());
        assert_eq!(stored, self.decoded.trace, "golden case {:?}: the stored trace context", self.case);
        self.decoded.trace = stored;
        self
    }
}

pub fn writing() -> bool {
    std::env::var("TIDINGS_WRITE_GOLDEN").is_ok_and(|v| v == "1")
}

fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("golden").join(format!("{file}.json"))
}

pub fn write(file: &str, f: &Fixture) {
    let p = path(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, serde_json::to_string_pretty(f).unwrap() + "\n").unwrap();
    eprintln!("wrote {}", p.display());
}

pub fn read(file: &str) -> Fixture {
    let p = path(file);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!("golden fixture {} is missing ({e}); record it with TIDINGS_WRITE_GOLDEN=1", p.display())
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("golden fixture {} does not parse: {e}", p.display()))
}

/// [`run_named`] with the fixture `tests/golden/<case>.json` and no volatile keys of the backend's own.
pub async fn run<R, D, RF, DF>(case: Case, record: R, decode: D)
where
    R: Fn(Case) -> RF,
    RF: Future<Output = Fixture>,
    D: Fn(Fixture) -> DF,
    DF: Future<Output = ()>,
{
    run_named(case.name, &[], case, record, decode).await
}

/// Records the case into `tests/golden/<file>.json` (when writing) or reads that fixture, then checks both ways:
/// `record` publishes with today's tidings and returns the fixture of what the broker stored, compared with the
/// file's after normalizing (`volatile`: keys whose values are the run's times or tokens); `decode` injects the
/// file's raw message into fresh resources and asserts what tidings decodes.
pub async fn run_named<R, D, RF, DF>(file: &str, volatile: &[&str], case: Case, record: R, decode: D)
where
    R: Fn(Case) -> RF,
    RF: Future<Output = Fixture>,
    D: Fn(Fixture) -> DF,
    DF: Future<Output = ()>,
{
    install_trace();
    let fixture = if writing() {
        let f = record(case).await;
        write(file, &f);
        f
    } else {
        read(file)
    };
    let today = record(case).await;
    assert_same_wire(file, &fixture, &today, volatile);
    decode(fixture).await;
}

// Not every backend uses every helper.
#[allow(unused_imports)]
pub use compare::{assert_same_wire, reprefix};
#[allow(unused_imports)]
pub use trace::{install_trace, received_trace, with_trace};

// ---- receiving with tidings ----

/// A delivery as the handler saw it, with the trace context its consumer span was connected to.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub meta: tidings_core::Metadata,
    pub payload: Order,
    pub trace: Option<BTreeMap<String, String>>,
}

/// Subscribes `SUBSCRIPTION` to `case`'s topic: the handler acks (and reports each delivery), or dead-letters with
/// [`REASON`] for a dead-letter case.
pub async fn subscribe(
    bus: &Bus,
    case: &Case,
    config: SubscriptionConfig,
) -> (Subscription, tokio::sync::mpsc::UnboundedReceiver<Delivered>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let dead_letter = case.dead_letter;
    let handler = move |m: Message<Order>| {
        let tx = tx.clone();
        async move {
            let trace = received_trace(m.id().as_str());
            let _ = tx.send(Delivered { meta: m.meta.clone(), payload: m.payload.clone(), trace });
            if dead_letter {
                return Err(HandlerError::unrecoverable(REASON));
            }
            Ok(())
        }
    };
    let sub = bus.subscribe(case.topic(), SUBSCRIPTION, config, handler).await.expect("subscribe");
    (sub, rx)
}

/// Checks what tidings made of the injected fixture `f`: a dead letter (reason, attempts) read through
/// `Subscription::dead_letters` for a dead-letter case, otherwise the delivery's decoded fields; then shuts `bus` down.
pub async fn assert_decoded(
    bus: &Bus,
    case: &Case,
    f: &Fixture,
    sub: &Subscription,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Delivered>,
) {
    if case.dead_letter && !case.redrive {
        let letters = eventually("the dead letter through Subscription::dead_letters", || async {
            let letters = sub.dead_letters(10).await.expect("dead letters");
            (!letters.is_empty()).then_some(letters)
        })
        .await;
        assert_dead_letter(f, &letters);
    } else {
        let d = delivery(rx, &f.decoded.id).await;
        assert_delivered(f, &d);
    }
    bus.shutdown(Duration::from_secs(5)).await;
}

/// The next delivery of message `id` (others are skipped), within [`PATIENCE`].
pub async fn delivery(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Delivered>, id: &str) -> Delivered {
    let end = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(d)) if d.meta.id.as_str() == id => return d,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the subscription stopped before message {id} arrived"),
            Err(_) => panic!("tidings did not deliver message {id} within {PATIENCE:?}"),
        }
    }
}

/// Asserts that tidings decoded the fixture's message as the fixture says.
pub fn assert_delivered(f: &Fixture, d: &Delivered) {
    let got = Decoded {
        id: d.meta.id.to_string(),
        publish_time_us: tidings_core::backend::time::micros(d.meta.publish_time),
        attributes: d.meta.attributes.clone(),
        ordering_key: d.meta.ordering_key.clone(),
        trace: d.trace.clone(),
        payload: serde_json::to_value(&d.payload).unwrap(),
        reason: None,
        attempts: None,
    };
    let want = Decoded { reason: None, attempts: None, ..f.decoded.clone() };
    assert_eq!(got, want, "golden case {:?} ({}): tidings decodes the fixture's raw message so", f.case, f.covers);
    assert_eq!(d.meta.attempt, 1, "golden case {:?}: a first delivery", f.case);
}

/// Asserts that a dead letter read through tidings is the fixture's.
pub fn assert_dead_letter(f: &Fixture, letters: &[DeadLetter]) {
    let d = letters
        .iter()
        .find(|d| d.id.as_str() == f.decoded.id)
        .unwrap_or_else(|| panic!("golden case {:?}: no dead letter {} among {letters:?}", f.case, f.decoded.id));
    let got = json!({
        "id": d.id.as_str(),
        "publish_time_us": tidings_core::backend::time::micros(d.publish_time),
        "attributes": d.attributes,
        "ordering_key": d.ordering_key,
        "payload": serde_json::from_slice::<Value>(&d.payload).unwrap(),
        "reason": d.reason,
        "attempts": d.attempts,
    });
    let w = &f.decoded;
    let want = json!({
        "id": w.id, "publish_time_us": w.publish_time_us, "attributes": w.attributes, "ordering_key": w.ordering_key,
        "payload": w.payload, "reason": w.reason, "attempts": w.attempts,
    });
    assert_eq!(got, want, "golden case {:?} ({}): the dead letter tidings reads", f.case, f.covers);
}

/// Polls `probe` until it returns `Some`, within [`PATIENCE`] (every 200 ms: no tight timing).
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < end, "{what} did not happen within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Microseconds since the Unix epoch of `t`.
pub fn micros(t: SystemTime) -> i64 {
    tidings_core::backend::time::micros(t)
}

/// tidings' metadata in a raw attribute value (`id`, `ts`, ...).
pub fn wire_meta(s: &str) -> tidings_core::backend::wire::WireMeta {
    tidings_core::backend::wire::WireMeta::decode(s).unwrap_or_else(|| panic!("not tidings metadata: {s:?}"))
}
