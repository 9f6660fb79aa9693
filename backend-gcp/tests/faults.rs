//! Network faults between tidings and the Pub/Sub emulator, injected by a TCP proxy (the shared
//! [`network_faults`](tidings_testkit::conformance::network_faults) scenario: resets mid-stream, a 3 s cut, latency),
//! for the publisher, the admin calls and the streaming pull at once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tidings_core::Bus;
use tidings_testkit::conformance::{network_faults, proxy::FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_cuts_and_latency_lose_nothing() {
    let proxy = FaultProxy::start(support::host()).await;
    let mut config = support::config();
    config.endpoint = Some(format!("http://{}", proxy.addr));
    let bus = Bus::new(Arc::new(support::backend(config).await));
    let report = network_faults(&bus, &proxy, "gcp", 300, Duration::from_secs(10), Duration::from_secs(90)).await;
    assert!(report.missing.is_empty(), "lost after the network returned: {:?}", report.missing);
    bus.shutdown(Duration::from_secs(5)).await;
}
