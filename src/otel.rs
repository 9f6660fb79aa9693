//! OpenTelemetry wiring (feature `opentelemetry`): a [`Propagator`] that carries trace context through messages with
//! the globally configured OpenTelemetry propagator, for spans exported by `tracing-opentelemetry`.
//!
//! ```no_run
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! // The W3C propagator (the OpenTelemetry default is a no-op).
//! opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build(); // add your exporter here
//! let tracer = provider.tracer("my-service");
//! let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
//! tracing::subscriber::set_global_default(subscriber).unwrap();
//! // tidings' publishes inject the current context; consumer spans link to it.
//! tidings::otel::install();
//! ```
//!
//! Where the context travels, for consumers that do not use tidings: in the `trace` object of the JSON in the
//! `tidings` message attribute (SNS/SQS and Pub/Sub message attributes: `{"id":...,"ts":...,"trace":{"traceparent":
//! "00-...","tracestate":"..."}}`); in the `attributes` JSON of the SQL backend's and the outbox's rows under
//! `tidings.trace.traceparent` / `tidings.trace.tracestate`.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tidings_core::trace::{Propagator, TraceContext};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Carries trace context with the global OpenTelemetry text map propagator. A consumer span links to the producer's
/// context (the messaging conventions' default); [`OtelPropagator::parent`] makes it the parent instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct OtelPropagator {
    parent: bool,
}

impl OtelPropagator {
    /// Links consumer spans to the producer's context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the producer's context the parent of each consumer span (one trace per message) instead of a link.
    pub fn parent(mut self, parent: bool) -> Self {
        self.parent = parent;
        self
    }
}

struct Inject<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct Extract<'a>(&'a BTreeMap<String, String>);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

impl Propagator for OtelPropagator {
    fn inject(&self, span: &Span, carrier: &mut BTreeMap<String, String>) {
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Inject(carrier)));
    }

    fn extract(&self, carrier: &TraceContext, span: &Span) {
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(carrier.fields())));
        if self.parent {
            if let Err(e) = span.set_parent(cx) {
                tracing::debug!(error = %e, "tidings: cannot parent the consumer span on the message's context");
            }
        } else {
            span.add_link(cx.span().span_context().clone());
        }
    }
}

/// Installs [`OtelPropagator`] (links) as tidings' propagator; `false` when a propagator was installed before.
pub fn install() -> bool {
    tidings_core::trace::set_propagator(OtelPropagator::new())
}

/// Installs `propagator` as tidings' propagator; `false` when one was installed before.
pub fn install_with(propagator: OtelPropagator) -> bool {
    tidings_core::trace::set_propagator(propagator)
}
