//! The shared conformance suite against Google's stock Pub/Sub emulator: the emulator as `gcloud beta emulators pubsub
//! start` runs it, without the project's grpc shim (`scripts/pubsub-emulator start --stock`, 127.0.0.1:8086, or
//! `PUBSUB_EMULATOR_STOCK_HOST`), beside `tests/conformance.rs` on the shimmed one.
//!
//! The stock emulator keeps every closed or reset streaming pull as a "ghost" consumer: it goes on taking a share of
//! the subscription's messages and holds each for its stream's ack deadline before another consumer gets it. So it
//! lacks `clean_close`: the two cases that close a subscription and expect its messages at the successor within
//! their patience are reported as ignored, by name and reason. What a closed stream had leased still comes back,
//! after that ack deadline (the book's GCP page, "Run it locally").

mod support;

use std::sync::Arc;
use tidings_core::Bus;
use tidings_testkit::conformance::{Harness, Timing};

struct GcpStock;

impl Harness for GcpStock {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(support::backend(support::stock_config()).await))
    }
    fn timing(&self) -> Timing {
        Timing::SECONDS
    }
}

tidings_testkit::conformance_tests!(gcp_stock => GcpStock; lacks: [bounded_backlog, clean_close]);

/// Load with injected failures, panics and slow handlers against the stock emulator (bounded: 1,000 messages).
#[test]
fn ledger_1000_messages_under_failures() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&GcpStock, 1_000, false));
}

/// `tests/faults.rs` on the stock emulator: every connection reset leaves the reset stream behind as a ghost that
/// keeps taking messages, so what the test publishes after the first reset comes back late or not within its 90 s
/// (2026-12-08: 168 of 300 delivered, 132 missing). Run it with `--ignored` to see it; the shim fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stock emulator: a reset streaming pull stays a ghost consumer that keeps taking messages (lost 132 of \
            300 within 90 s); tests/faults.rs passes on the shimmed emulator"]
async fn resets_cuts_and_latency_lose_nothing() {
    support::faults_lose_nothing(support::stock_host(), support::stock_config()).await;
}
