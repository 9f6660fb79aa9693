//! Network faults between tidings and the NATS server, injected by a TCP proxy (the shared
//! [`network_faults`](tidings_testkit::conformance::network_faults) scenario: resets mid-stream, a 3 s cut, latency).

mod support;

use std::sync::Arc;
use std::time::Duration;

use tidings_core::Bus;
use tidings_nats::NatsBackend;
use tidings_testkit::conformance::{network_faults, proxy::FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_cuts_and_latency_lose_nothing() {
    support::require_server();
    let target = support::url().trim_start_matches("nats://").to_string();
    let proxy = FaultProxy::start(target).await;
    let mut config = support::config();
    config.url = Some(format!("nats://{}", proxy.addr));
    let bus = Bus::new(Arc::new(NatsBackend::new(config).await.unwrap()));
    let report = network_faults(&bus, &proxy, "nats", 300, Duration::from_secs(5), Duration::from_secs(90)).await;
    assert!(report.missing.is_empty(), "lost after the network returned: {:?}", report.missing);
    bus.shutdown(Duration::from_secs(5)).await;
}
