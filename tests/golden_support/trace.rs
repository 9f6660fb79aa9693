//! Trace context: a propagator that injects the context of [`with_trace`] into a publish, and records the context
//! each consumer span is connected to, by message id, through a `tracing` subscriber that enables tidings' `process`
//! spans only.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};

use tidings_core::trace::{Propagator, TraceContext};

tokio::task_local! {
    static PUBLISH_TRACE: BTreeMap<String, String>;
}

/// Runs a publish whose trace context is `fields`.
pub async fn with_trace<F: Future>(fields: BTreeMap<String, String>, publish: F) -> F::Output {
    PUBLISH_TRACE.scope(fields, publish).await
}

/// The trace context tidings connected the consumer span of message `id` to (its last delivery).
pub fn received_trace(id: &str) -> Option<BTreeMap<String, String>> {
    capture().extracted.lock().unwrap().get(id).cloned()
}

#[derive(Default)]
struct Capture {
    next: AtomicU64,
    /// `process` span id -> `messaging.message.id`.
    spans: Mutex<HashMap<u64, String>>,
    /// message id -> context extracted for it.
    extracted: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

fn capture() -> &'static Arc<Capture> {
    static CAPTURE: OnceLock<Arc<Capture>> = OnceLock::new();
    CAPTURE.get_or_init(|| Arc::new(Capture { next: AtomicU64::new(1), ..Default::default() }))
}

/// Installs the propagator and the span subscriber (once per test process).
pub fn install_trace() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        tracing::subscriber::set_global_default(Spans(capture().clone()))
            .expect("the golden test installs the global tracing subscriber");
        assert!(tidings_core::trace::set_propagator(Golden), "the golden test installs the trace propagator");
    });
}

struct Golden;

impl Propagator for Golden {
    fn inject(&self, _span: &tracing::Span, carrier: &mut BTreeMap<String, String>) {
        let _ = PUBLISH_TRACE.try_with(|t| carrier.extend(t.clone()));
    }

    fn extract(&self, carrier: &TraceContext, span: &tracing::Span) {
        let Some(id) = span.id() else { return };
        let Some(msg) = capture().spans.lock().unwrap().get(&id.into_u64()).cloned() else { return };
        capture().extracted.lock().unwrap().insert(msg, carrier.fields().clone());
    }
}

/// Enables tidings' `process` spans (so the propagator sees them) and nothing else.
struct Spans(Arc<Capture>);

struct MessageIdField(Option<String>);

impl tracing::field::Visit for MessageIdField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "messaging.message.id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "messaging.message.id" {
            self.0 = Some(value.to_string());
        }
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        m.is_span() && m.target() == "tidings" && m.name() == "process"
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let id = self.0.next.fetch_add(1, SeqCst);
        let mut field = MessageIdField(None);
        attrs.record(&mut field);
        if let Some(msg) = field.0 {
            // A new delivery: the context of an earlier one of the same id (a redriven message) is not this one's.
            self.0.extracted.lock().unwrap().remove(&msg);
            self.0.spans.lock().unwrap().insert(id, msg);
        }
        tracing::span::Id::from_u64(id)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
