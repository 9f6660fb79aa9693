//! Network faults between tidings and LocalStack, injected by a TCP proxy (the shared
//! [`network_faults`](tidings_testkit::conformance::network_faults) scenario: resets mid-stream, a 3 s cut, latency).

mod support;

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use tidings_aws::AwsBackend;
use tidings_core::Bus;
use tidings_testkit::conformance::{network_faults, proxy::FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_cuts_and_latency_lose_nothing() {
    let _ = support::sdk().await; // LocalStack is up (or a clear panic)
    let target = support::endpoint().trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start(target).await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{}", proxy.addr))
        .credentials_provider(Credentials::new("test", "test", None, None, "tidings-tests"))
        .load()
        .await;
    let bus = Bus::new(Arc::new(AwsBackend::with_sdk_config(&sdk, support::config()).unwrap()));
    let report = network_faults(&bus, &proxy, "aws", 300, Duration::from_secs(5), Duration::from_secs(90)).await;
    assert!(report.missing.is_empty(), "lost after the network returned: {:?}", report.missing);
    bus.shutdown(Duration::from_secs(5)).await;
}
