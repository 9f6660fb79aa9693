//! Tracing: the spans tidings opens (after the OpenTelemetry messaging conventions) and the propagation of trace
//! context through messages.
//!
//! Spans are [`tracing`] spans, target `tidings`, level INFO:
//!
//! - `send` (`otel.name` = `send <topic>`, `otel.kind` = `producer`) around each publish or batch;
//! - `process` (`otel.name` = `process <subscription>`, `otel.kind` = `consumer`) around each delivery attempt,
//!   current while the handler runs, so the handler's own events carry the message id, attempt and subscription.
//!   Settle outcomes are events inside it (`tidings.settle` = `ack`, `nack`, `dead_letter`, `extend_lease`).
//!
//! Trace context travels inside tidings' own metadata ([`crate::backend::wire::WireMeta::trace`] on the cloud backends, the
//! stored message in-process), never in an application attribute. Core has no OpenTelemetry dependency: a
//! [`Propagator`] installed with [`set_propagator`] writes the context at publish and connects the consumer span to
//! it; the facade's `opentelemetry` feature provides one backed by the global OpenTelemetry propagator. With no
//! propagator installed, nothing is captured and messages carry no context.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tracing::Span;

/// Trace context fields carried by a message (W3C `traceparent`, `tracestate`, or whatever the installed propagator
/// writes). Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext(Arc<BTreeMap<String, String>>);

impl TraceContext {
    /// A context from carrier fields; `None` when there are none.
    pub fn new(fields: BTreeMap<String, String>) -> Option<Self> {
        (!fields.is_empty()).then(|| TraceContext(Arc::new(fields)))
    }

    /// One field, such as `traceparent`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Every field the propagator wrote at publish (W3C: `traceparent`, and `tracestate` when set): what a consumer
    /// hands back to its propagator to continue the trace.
    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl std::fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl Serialize for TraceContext {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TraceContext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fields = BTreeMap::<String, String>::deserialize(d)?;
        Ok(TraceContext(Arc::new(fields)))
    }
}

/// Prefix of the keys under which backends that keep attributes as one JSON document (the SQL backend, the outbox)
/// store the trace context beside the application's attributes; names starting with `tidings` are reserved, so an
/// application attribute never collides.
pub const TRACE_KEY_PREFIX: &str = "tidings.trace.";

/// The attributes with the trace context added under [`TRACE_KEY_PREFIX`] (for storage as one document).
pub fn attributes_with_trace<'a>(
    attributes: &'a crate::Attributes,
    trace: Option<&TraceContext>,
) -> std::borrow::Cow<'a, crate::Attributes> {
    match trace {
        None => std::borrow::Cow::Borrowed(attributes),
        Some(t) => {
            let mut all = attributes.clone();
            all.extend(t.fields().iter().map(|(k, v)| (format!("{TRACE_KEY_PREFIX}{k}"), v.clone())));
            std::borrow::Cow::Owned(all)
        }
    }
}

/// Splits what [`attributes_with_trace`] stored back into the application's attributes and the trace context.
pub fn split_trace(mut attributes: crate::Attributes) -> (crate::Attributes, Option<TraceContext>) {
    if !attributes.keys().any(|k| k.starts_with(TRACE_KEY_PREFIX)) {
        return (attributes, None);
    }
    let trace_keys: Vec<String> = attributes.keys().filter(|k| k.starts_with(TRACE_KEY_PREFIX)).cloned().collect();
    let mut fields = BTreeMap::new();
    for k in trace_keys {
        let v = attributes.remove(&k).unwrap_or_default();
        fields.insert(k[TRACE_KEY_PREFIX.len()..].to_string(), v);
    }
    (attributes, TraceContext::new(fields))
}

/// Writes and reads trace context; installed once per process with [`set_propagator`].
pub trait Propagator: Send + Sync + 'static {
    /// Writes the context of `span` into `carrier`. `span` is tidings' producer span, or the caller's current span
    /// when tidings' span is disabled (an outbox write, a filter that drops tidings' spans).
    fn inject(&self, span: &Span, carrier: &mut BTreeMap<String, String>);

    /// Connects the consumer span `span` (enabled) to the context a message carried: a link by default (the
    /// conventions' recommendation), or its parent where the implementation is configured so.
    fn extract(&self, carrier: &TraceContext, span: &Span);
}

static PROPAGATOR: OnceLock<Box<dyn Propagator>> = OnceLock::new();

/// Installs the process's propagator; `false` (and `p` is dropped) when one was installed before.
pub fn set_propagator(p: impl Propagator) -> bool {
    PROPAGATOR.set(Box::new(p)).is_ok()
}

/// The installed propagator, if any.
pub fn propagator() -> Option<&'static dyn Propagator> {
    PROPAGATOR.get().map(|p| &**p)
}

/// The context to carry with a message published under `span`; `None` without a propagator.
pub(crate) fn capture(span: &Span) -> Option<TraceContext> {
    let p = propagator()?;
    let mut carrier = BTreeMap::new();
    if span.is_disabled() {
        p.inject(&Span::current(), &mut carrier);
    } else {
        p.inject(span, &mut carrier);
    }
    TraceContext::new(carrier)
}

/// Connects a consumer span to the context its message carried.
pub(crate) fn connect(trace: Option<&TraceContext>, span: &Span) {
    if let (Some(t), Some(p)) = (trace, propagator()) {
        if !span.is_disabled() {
            p.extract(t, span);
        }
    }
}

/// The producer span of a publish to `topic`.
pub(crate) fn send_span(system: &str, topic: &str) -> Span {
    tracing::info_span!(
        target: "tidings",
        "send",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
        messaging.system = system,
        messaging.destination.name = topic,
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.message.id = tracing::field::Empty,
        messaging.batch.message_count = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// `error.type` of a failed call.
pub(crate) fn error_type(e: &crate::Error) -> &'static str {
    match e.kind() {
        crate::ErrorKind::InvalidInput => "invalid_input",
        crate::ErrorKind::MessageTooLarge => "message_too_large",
        crate::ErrorKind::Config => "config",
        crate::ErrorKind::Conflict => "conflict",
        crate::ErrorKind::NotFound => "not_found",
        crate::ErrorKind::Mismatch => "mismatch",
        crate::ErrorKind::Unsupported => "unsupported",
        crate::ErrorKind::Codec => "codec",
        crate::ErrorKind::Backend => "backend",
        crate::ErrorKind::Shutdown => "shutdown",
        crate::ErrorKind::BacklogFull => "backlog_full",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_fields_round_trip_through_stored_attributes() {
        let attrs: crate::Attributes = [("source".to_string(), "web".to_string())].into();
        let t = TraceContext::new([("traceparent".to_string(), "00-ab-cd-01".to_string())].into()).unwrap();
        let stored = attributes_with_trace(&attrs, Some(&t)).into_owned();
        assert_eq!(stored.get("tidings.trace.traceparent").map(String::as_str), Some("00-ab-cd-01"));
        assert_eq!(split_trace(stored), (attrs.clone(), Some(t)));
        assert_eq!(split_trace(attrs.clone()), (attrs, None));
        assert!(TraceContext::new(BTreeMap::new()).is_none());
    }
}
