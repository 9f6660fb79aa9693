//! Network faults between tidings and the Pub/Sub emulator, injected by a TCP proxy (the shared
//! [`network_faults`](tidings_testkit::conformance::network_faults) scenario: resets mid-stream, a 3 s cut, latency),
//! for the publisher, the admin calls and the streaming pull at once.

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_cuts_and_latency_lose_nothing() {
    support::faults_lose_nothing(support::host(), support::config()).await;
}
