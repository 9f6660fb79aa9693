//! Connecting the tests to the Pub/Sub emulator (started by `scripts/pubsub-emulator start`, which `scripts/test`
//! runs).
#![allow(dead_code)]

use std::time::Duration;

use tidings_gcp::{GcpBackend, GcpConfig};

pub fn host() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| "127.0.0.1:8085".into())
}

/// Google's stock emulator (`scripts/pubsub-emulator start --stock`, what `gcloud beta emulators pubsub start` runs,
/// without the project's grpc shim): `PUBSUB_EMULATOR_STOCK_HOST`, by default 127.0.0.1:8086.
pub fn stock_host() -> String {
    std::env::var("PUBSUB_EMULATOR_STOCK_HOST").unwrap_or_else(|_| "127.0.0.1:8086".into())
}

/// Config for the emulator; panics with instructions when it is not running.
pub fn config() -> GcpConfig {
    config_at(host(), "scripts/pubsub-emulator start")
}

/// Config for the stock emulator ([`stock_host`]); panics with instructions when it is not running.
pub fn stock_config() -> GcpConfig {
    config_at(stock_host(), "scripts/pubsub-emulator start --stock")
}

fn config_at(host: String, start: &str) -> GcpConfig {
    if std::net::TcpStream::connect_timeout(&host.parse().expect("host:port"), Duration::from_secs(2)).is_err() {
        panic!(
            "the Pub/Sub emulator is not reachable at {host}: the GCP tests need it (CI={}). Start it with \
             `{start}` (scripts/test does this)",
            std::env::var("CI").unwrap_or_default()
        );
    }
    let mut c = GcpConfig::default();
    c.project_id = Some("tidings-test".into());
    c.endpoint = Some(format!("http://{host}"));
    c
}

pub async fn backend(config: GcpConfig) -> GcpBackend {
    GcpBackend::new(config).await.expect("backend")
}

/// [`config`] with another provisioning mode.
pub fn provisioned(mode: tidings_gcp::Provisioning) -> GcpConfig {
    let mut c = config();
    c.provisioning = mode;
    c
}

/// Google's own publisher client on the emulator (anonymous credentials), as another service would publish.
pub async fn plain_publisher() -> google_cloud_pubsub::client::BasePublisher {
    google_cloud_pubsub::client::BasePublisher::builder()
        .with_endpoint(format!("http://{}", host()))
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .build()
        .await
        .expect("Google's publisher client on the emulator")
}

/// The shared network-fault scenario (resets mid-stream, a 3 s cut, latency; 300 messages) through a TCP proxy in
/// front of the emulator at `host`, for the publisher, the admin calls and the streaming pull at once: nothing is lost.
pub async fn faults_lose_nothing(host: String, mut config: GcpConfig) {
    use tidings_testkit::conformance::{network_faults, proxy::FaultProxy};
    let proxy = FaultProxy::start(host).await;
    config.endpoint = Some(format!("http://{}", proxy.addr));
    let bus = tidings_core::Bus::new(std::sync::Arc::new(backend(config).await));
    let report = network_faults(&bus, &proxy, "gcp", 300, Duration::from_secs(10), Duration::from_secs(90)).await;
    assert!(report.missing.is_empty(), "lost after the network returned: {:?}", report.missing);
    bus.shutdown(Duration::from_secs(5)).await;
}
