//! Connecting the tests to LocalStack (started by `scripts/localstack start`, which `scripts/test` runs).
#![allow(dead_code)]

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use tidings_aws::{AwsBackend, AwsConfig};

pub fn endpoint() -> String {
    std::env::var("TIDINGS_TEST_AWS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// SDK config for LocalStack with test credentials; panics with instructions when LocalStack is not running.
pub async fn sdk() -> aws_config::SdkConfig {
    let ep = endpoint();
    let hostport = ep.trim_start_matches("http://").trim_start_matches("https://").to_string();
    if std::net::TcpStream::connect_timeout(&hostport.parse().expect("host:port"), Duration::from_secs(2)).is_err() {
        panic!(
            "LocalStack is not reachable at {ep}: the AWS tests need it (CI={}). Start it with `scripts/localstack start` \
             (scripts/test does this)",
            std::env::var("CI").unwrap_or_default()
        );
    }
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(ep)
        .credentials_provider(Credentials::new("test", "test", None, None, "tidings-tests"))
        .load()
        .await
}

pub fn config() -> AwsConfig {
    let mut c = AwsConfig::default();
    c.wait_time = Duration::from_secs(1);
    c
}

pub async fn backend(config: AwsConfig) -> AwsBackend {
    AwsBackend::with_sdk_config(&sdk().await, config).expect("backend")
}

/// [`config`] with another provisioning mode.
pub fn provisioned(mode: tidings_aws::Provisioning) -> AwsConfig {
    let mut c = config();
    c.provisioning = mode;
    c
}
