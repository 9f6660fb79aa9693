//! The signup example's telemetry (feature `opentelemetry`): a Prometheus endpoint for tidings' metrics and span export
//! (OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, otherwise each signup's trace printed as text at the end).
//!
//! - `SIGNUP_METRICS_ADDR`: where `/metrics` is served (default `127.0.0.1:9464`; port 0 picks a free one).
//! - `SIGNUP_LINGER`: seconds to keep serving `/metrics` after the story (default 0), so it can be scraped.
//! - `OTEL_EXPORTER_OTLP_ENDPOINT`: an OTLP/HTTP collector (e.g. `http://127.0.0.1:4318`); spans go there in batches.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{TraceId, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What [`init`] installed; [`Telemetry::finish`] flushes it.
pub struct Telemetry {
    provider: SdkTracerProvider,
    spans: Option<Spans>,
    pub metrics: Option<SocketAddr>,
}

/// Spans kept in memory until the end of the story, when they are printed.
#[derive(Debug, Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Spans {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// Installs the Prometheus recorder (before the bus is built, so its handles go there), the tracing subscriber with
/// the OpenTelemetry layer, the W3C propagator, and tidings' propagator.
pub async fn init() -> Result<Telemetry, Box<dyn std::error::Error>> {
    // Recommended naming: counters end in `_total`, second-valued metrics in `_seconds`.
    let handle = PrometheusBuilder::new().with_recommended_naming(true).install_recorder()?;
    tidings::metrics::describe();
    let metrics = serve_metrics(handle).await;

    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("signup-example").build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let (provider, spans) = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
        (builder.with_batch_exporter(exporter).build(), None)
    } else {
        let spans = Spans::default();
        (builder.with_simple_exporter(spans.clone()).build(), Some(spans))
    };
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("signup-example"))
        .with_filter(EnvFilter::new("tidings=debug,signup=info"));
    let log = tracing_subscriber::fmt::layer()
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(otel).with(log))?;
    // Each handler span becomes a child of the signup request that wrote the outbox row, so one signup is one trace
    // (the conventions' default is a link: `tidings::otel::install()`).
    tidings::otel::install_with(tidings::otel::OtelPropagator::new().parent(true));
    Ok(Telemetry { provider, spans, metrics })
}

/// Serves the recorder's rendering at `/metrics`; `None` (and a note) when the address cannot be bound.
async fn serve_metrics(handle: PrometheusHandle) -> Option<SocketAddr> {
    let addr = std::env::var("SIGNUP_METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9464".into());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            println!("metrics: not served, cannot listen on {addr} ({e}); set SIGNUP_METRICS_ADDR");
            return None;
        }
    };
    let local = listener.local_addr().ok()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || std::future::ready(handle.render())));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Some(local)
}

impl Telemetry {
    /// Flushes the spans; prints the trace of the signup of `user_id` when they are kept here; keeps `/metrics` up
    /// for `SIGNUP_LINGER` seconds.
    pub async fn finish(self, user_id: u64) -> Result<(), Box<dyn std::error::Error>> {
        self.provider.force_flush()?;
        match &self.spans {
            Some(spans) => print_trace(&spans.0.lock().unwrap(), user_id),
            None => println!("spans exported to the OTLP endpoint"),
        }
        self.provider.shutdown()?;
        let linger: u64 = std::env::var("SIGNUP_LINGER").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        if let (Some(addr), true) = (self.metrics, linger > 0) {
            println!("serving http://{addr}/metrics for {linger} s (Ctrl-C to stop)");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(linger)) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Ok(())
    }
}

/// Prints the trace whose root is the `signup` span of `user_id` as an indented tree: start offset, name,
/// duration, the attributes a reader looks for, and the settle events.
fn print_trace(spans: &[SpanData], user_id: u64) {
    let user = Value::I64(user_id as i64);
    let Some(root) = spans.iter().find(|s| s.name == "signup" && attr(s, "user.id") == Some(&user)) else {
        println!("no trace recorded for the signup of user {user_id}");
        return;
    };
    let trace: TraceId = root.span_context.trace_id();
    println!("trace {trace} (the signup of user {user_id}):");
    let mut members: Vec<SpanData> = spans.iter().filter(|s| s.span_context.trace_id() == trace).cloned().collect();
    // The relay's publish is a trace of its own (one relay batch carries rows of many requests): per topic the
    // request wrote to, the `send` span that started between the request and the topic's first delivery, shown in its
    // place and marked.
    let mut first_delivery: BTreeMap<String, SystemTime> = BTreeMap::new();
    for s in members.iter().filter(|s| s.parent_span_id == root.span_context.span_id()) {
        if let Some(topic) = attr(s, "messaging.destination.name") {
            let first = first_delivery.entry(topic.to_string()).or_insert(s.start_time);
            *first = (*first).min(s.start_time);
        }
    }
    for (topic, first) in first_delivery {
        let relay = spans.iter().rfind(|s| {
            s.span_context.trace_id() != trace
                && s.name == format!("send {topic}")
                && s.start_time >= root.start_time
                && s.start_time <= first
        });
        if let Some(send) = relay {
            let mut send = send.clone();
            send.name = format!("{} [outbox relay, trace {}]", send.name, send.span_context.trace_id()).into();
            send.parent_span_id = root.span_context.span_id();
            members.push(send);
        }
    }
    members.sort_by_key(|s| s.start_time);
    let members: Vec<&SpanData> = members.iter().collect();
    print_span(&members, root, root.start_time, 0);
}

/// The attributes a reader looks for, with short labels.
const SHOWN: [(&str, &str); 6] = [
    ("user.id", "user"),
    ("messaging.destination.name", "topic"),
    ("messaging.destination.subscription.name", "subscription"),
    ("messaging.batch.message_count", "messages"),
    ("tidings.delivery.attempt", "attempt"),
    ("error.type", "error"),
];

fn print_span(all: &[&SpanData], span: &SpanData, t0: SystemTime, depth: usize) {
    let at = |t: SystemTime| t.duration_since(t0).unwrap_or_default().as_secs_f64() * 1000.0;
    let took = span.end_time.duration_since(span.start_time).unwrap_or_default().as_secs_f64() * 1000.0;
    let shown: Vec<String> =
        SHOWN.iter().filter_map(|(k, label)| attr(span, k).map(|v| format!("{label}={v}"))).collect();
    let indent = "  ".repeat(depth);
    println!("{:>8.1} ms {indent}{} ({took:.1} ms) {}", at(span.start_time), span.name, shown.join(" "));
    for e in span.events.iter() {
        let fields: Vec<String> = e
            .attributes
            .iter()
            .filter(|kv| ["tidings.settle", "tidings.retry_in", "reason"].contains(&kv.key.as_str()))
            .map(|kv| format!("{}={}", kv.key.as_str().trim_start_matches("tidings."), kv.value))
            .collect();
        if !fields.is_empty() {
            println!("{:>8.1} ms {indent}  · {}", at(e.timestamp), fields.join(" "));
        }
    }
    let me = span.span_context.span_id();
    for child in all.iter().filter(|s| s.parent_span_id == me) {
        print_span(all, child, t0, depth + 1);
    }
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}
