//! The "observability on" configuration of the benchmarks (`TIDINGS_BENCH_OBSERVE=1`): a real pipeline as an
//! application would install it, the Prometheus recorder for the metrics and `tracing-opentelemetry` with the SDK's
//! batch exporter (into a sink, so no network is measured) for the INFO spans. Installed before any bus exists.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// Drops every batch it is given (after the SDK built and batched the spans).
#[derive(Debug)]
struct Sink;

impl SpanExporter for Sink {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        drop(batch);
        Ok(())
    }
}

/// What stays installed; [`Pipeline::finish`] flushes it and says how many metric lines Prometheus would serve.
pub struct Pipeline {
    provider: SdkTracerProvider,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
}

pub fn install() -> Pipeline {
    let prometheus =
        metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().expect("the only metrics recorder");
    tidings_core::metrics::describe();
    let provider = SdkTracerProvider::builder().with_batch_exporter(Sink).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")).with_filter(LevelFilter::INFO);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).expect("the only subscriber");
    Pipeline { provider, prometheus }
}

impl Pipeline {
    /// Flushes the spans; returns the number of lines of the Prometheus page (a check that metrics were recorded).
    pub fn finish(self) -> usize {
        let _ = self.provider.force_flush();
        self.prometheus.render().lines().filter(|l| l.starts_with("messaging_") || l.starts_with("tidings_")).count()
    }
}
