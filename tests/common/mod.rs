//! Set-up shared by the facade's test files (each includes what it uses with `mod common;`).
#![allow(dead_code)]

/// Captures every span of this test process through `tracing-opentelemetry` into an in-memory exporter, with the W3C
/// propagator installed globally (call once per process; tidings' own propagator is installed by the caller). The
/// provider flushes.
#[cfg(feature = "opentelemetry")]
pub fn capture_spans() -> (opentelemetry_sdk::trace::InMemorySpanExporter, opentelemetry_sdk::trace::SdkTracerProvider)
{
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let provider =
        opentelemetry_sdk::trace::SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    (exporter, provider)
}

/// The AWS SDK config for LocalStack on 127.0.0.1:4566 with explicit test credentials.
#[cfg(feature = "test-worker")]
pub async fn localstack_sdk() -> aws_config::SdkConfig {
    use aws_sdk_sqs::config::Credentials;
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:4566")
        .credentials_provider(Credentials::new("test", "test", None, None, "tidings-tests"))
        .load()
        .await
}
