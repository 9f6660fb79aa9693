//! The whole conformance suite against the reference backend. It does ordering and exactly-once natively; it lacks
//! `bounded_backlog` (publishes that wait or fail while a subscription is full), so that case is reported as ignored.

use std::sync::Arc;

use tidings_core::Bus;
use tidings_testkit::conformance::{Harness, Timing};
use tidings_testkit::Reference;

struct Ref;

impl Harness for Ref {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(Reference::new()))
    }
    fn timing(&self) -> Timing {
        Timing::FAST
    }
}

tidings_testkit::conformance_tests!(reference => Ref; lacks: [bounded_backlog]);

/// Load with injected failures, panics and slow handlers: every message ends acked or dead-lettered, in each of two
/// subscriptions.
#[test]
fn ledger_20000_messages_under_failures() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Ref, 20_000, false));
}

#[test]
fn ledger_exactly_once_has_no_duplicate_after_ack() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Ref, 5_000, true));
}
