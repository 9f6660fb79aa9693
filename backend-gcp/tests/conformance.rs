//! The shared conformance suite against Google's Pub/Sub emulator.

mod support;

use std::sync::Arc;

use tidings_core::Bus;
use tidings_testkit::conformance::{Harness, Timing};

struct Gcp;

impl Harness for Gcp {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(support::backend(support::config()).await))
    }
    fn timing(&self) -> Timing {
        Timing::SECONDS
    }
}

tidings_testkit::conformance_tests!(gcp => Gcp; lacks: [bounded_backlog]);

/// Load with injected failures, panics and slow handlers against the emulator (bounded: 1,000 messages).
#[test]
fn ledger_1000_messages_under_failures() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Gcp, 1_000, false));
}
