//! Connecting the tests to the Pub/Sub emulator (started by `scripts/pubsub-emulator start`, which `scripts/test`
//! runs).
#![allow(dead_code)]

use std::time::Duration;

use tidings_gcp::{GcpBackend, GcpConfig};

pub fn host() -> String {
    std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| "127.0.0.1:8085".into())
}

/// Config for the emulator; panics with instructions when it is not running.
pub fn config() -> GcpConfig {
    let host = host();
    if std::net::TcpStream::connect_timeout(&host.parse().expect("host:port"), Duration::from_secs(2)).is_err() {
        panic!(
            "the Pub/Sub emulator is not reachable at {host}: the GCP tests need it (CI={}). Start it with \
             `scripts/pubsub-emulator start` (scripts/test does this)",
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
