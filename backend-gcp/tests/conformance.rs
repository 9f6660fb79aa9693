//! The shared conformance suite against Google's Pub/Sub emulator.

mod support;

use std::sync::Arc;

use tidings_core::conformance::{Harness, Timing};
use tidings_core::Bus;

struct Gcp;

impl Harness for Gcp {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(support::backend(support::config()).await))
    }
    fn timing(&self) -> Timing {
        Timing::SECONDS
    }
}

tidings_core::conformance_tests!(gcp => Gcp; lacks: [bounded_backlog]);

/// Load with injected failures, panics and slow handlers against the emulator (bounded: 1,000 messages).
#[test]
fn ledger_1000_messages_under_failures() {
    tidings_core::conformance::block_on(tidings_core::conformance::ledger(&Gcp, 1_000, false));
}
