//! The shared conformance suite and the ledger against a NATS server with JetStream.

mod support;

use std::sync::Arc;

use tidings_core::Bus;
use tidings_testkit::conformance::{Harness, Timing};

struct Nats;

impl Harness for Nats {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(support::backend(support::config()).await))
    }
    fn timing(&self) -> Timing {
        support::TIMING
    }
}

tidings_testkit::conformance_tests!(nats => Nats; lacks: [bounded_backlog]);

/// Load with injected failures, panics and slow handlers (bounded: 1,000 messages).
#[test]
fn ledger_1000_messages_under_failures() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Nats, 1_000, false));
}
