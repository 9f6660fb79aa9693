//! A capturing `tracing` layer and a matching [`Propagator`] for the trace conformance case: spans and events are
//! recorded for watched topics only (a span is watched when one of its fields names a watched topic), and the
//! propagator writes a W3C-shaped `traceparent` whose span id is the capture's index of the producer span, so a
//! consumer span's link can be checked against the span that published.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Span, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use tidings_core::trace::{Propagator, TraceContext};

/// One captured span.
#[derive(Debug, Clone, Default)]
pub struct SpanRecord {
    /// The span's index in the capture.
    pub index: usize,
    /// `tracing` name (`send`, `process`, ...).
    pub name: String,
    /// Fields, as displayed.
    pub fields: BTreeMap<String, String>,
    /// Index of the nearest captured ancestor.
    pub parent: Option<usize>,
    /// Indexes of the spans it links to (through the propagator).
    pub links: Vec<usize>,
    /// Events recorded inside it, with their fields (`message` holds the text).
    pub events: Vec<BTreeMap<String, String>>,
}

impl SpanRecord {
    /// A field's value.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
    /// Events with `field` = `value`.
    pub fn events_with(&self, field: &str, value: &str) -> Vec<&BTreeMap<String, String>> {
        self.events.iter().filter(|e| e.get(field).map(String::as_str) == Some(value)).collect()
    }
}

#[derive(Default)]
struct State {
    watched: HashSet<String>,
    spans: Vec<SpanRecord>,
    /// Open captured spans: tracing id -> index.
    live: HashMap<u64, usize>,
}

/// The process-wide capture.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<State>>, Arc<AtomicUsize>);

/// Keeps the capture recording; spans are not even created while no guard is alive, so the tests running beside the
/// trace cases (the ledger) are not slowed down by it.
pub struct Watching(Arc<AtomicUsize>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

static INSTALLED: OnceLock<Capture> = OnceLock::new();

/// Installs the capture as the global `tracing` subscriber and the propagator (once per process). Panics when
/// another global subscriber or propagator is installed: this case needs to be the one that sees tidings' spans.
pub fn install() -> Capture {
    INSTALLED
        .get_or_init(|| {
            let capture = Capture::default();
            let subscriber = tracing_subscriber::registry().with(Recorder(capture.clone()));
            tracing::subscriber::set_global_default(subscriber)
                .expect("the trace conformance case installs the global tracing subscriber; another one was installed");
            assert!(
                tidings_core::trace::set_propagator(CapturePropagator(capture.clone())),
                "the trace conformance case installs the trace propagator; another one was installed"
            );
            capture
        })
        .clone()
}

impl Capture {
    /// Records spans (and their events) that name `topic` from now on, while the guard lives.
    #[must_use = "spans are recorded only while the guard lives"]
    pub fn watch(&self, topic: &str) -> Watching {
        self.0.lock().unwrap().watched.insert(topic.to_string());
        self.1.fetch_add(1, SeqCst);
        Watching(self.1.clone())
    }

    /// The captured spans one of whose fields names `topic`.
    pub fn spans_of(&self, topic: &str) -> Vec<SpanRecord> {
        let st = self.0.lock().unwrap();
        st.spans.iter().filter(|s| s.fields.values().any(|v| v == topic)).cloned().collect()
    }

    fn index_of(&self, span: &Span) -> Option<usize> {
        let id = span.id()?;
        self.0.lock().unwrap().live.get(&id.into_u64()).copied()
    }
}

struct Recorder(Capture);

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

/// Reads the topic a span names: `messaging.destination.name` (tidings' spans) or `test.topic` (the tests' own).
struct TopicField(Option<String>);

impl Visit for TopicField {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(field.name(), "messaging.destination.name" | "test.topic") {
            self.0 = Some(format!("{value:?}"));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if matches!(field.name(), "messaging.destination.name" | "test.topic") {
            self.0 = Some(value.to_string());
        }
    }
}

/// The capture's index of a span, kept in its extensions.
struct Index(usize);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn register_callsite(&self, _meta: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, _meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.0 .1.load(SeqCst) > 0
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // Cheap for the spans of other tests running in the same process: only the topic is read before the check.
        let mut topic = TopicField(None);
        attrs.record(&mut topic);
        let Some(topic) = topic.0 else { return };
        if !self.0 .0.lock().unwrap().watched.contains(&topic) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent = span.scope().skip(1).find_map(|s| s.extensions().get::<Index>().map(|i| i.0));
        let mut st = self.0 .0.lock().unwrap();
        let index = st.spans.len();
        st.spans.push(SpanRecord {
            index,
            name: attrs.metadata().name().to_string(),
            fields: fields.0,
            parent,
            ..Default::default()
        });
        st.live.insert(id.into_u64(), index);
        drop(st);
        span.extensions_mut().insert(Index(index));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(index) = ctx.span(id).and_then(|s| s.extensions().get::<Index>().map(|i| i.0)) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        self.0 .0.lock().unwrap().spans[index].fields.extend(fields.0);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else { return };
        let Some(index) = span.scope().find_map(|s| s.extensions().get::<Index>().map(|i| i.0)) else { return };
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0 .0.lock().unwrap().spans[index].events.push(fields.0);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if ctx.span(&id).is_some_and(|s| s.extensions().get::<Index>().is_some()) {
            self.0 .0.lock().unwrap().live.remove(&id.into_u64());
        }
    }
}

/// Writes `00-<trace>-<span index + 1>-01`; links (or parents) the consumer span to the span of that index.
struct CapturePropagator(Capture);

impl Propagator for CapturePropagator {
    fn inject(&self, span: &Span, carrier: &mut BTreeMap<String, String>) {
        if let Some(i) = self.0.index_of(span) {
            carrier.insert("traceparent".into(), format!("00-{:032x}-{:016x}-01", 1, i + 1));
        }
    }

    fn extract(&self, carrier: &TraceContext, span: &Span) {
        let producer = carrier
            .get("traceparent")
            .and_then(|tp| tp.split('-').nth(2))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .and_then(|n| (n as usize).checked_sub(1));
        let (Some(producer), Some(consumer)) = (producer, self.0.index_of(span)) else { return };
        self.0 .0.lock().unwrap().spans[consumer].links.push(producer);
    }
}
