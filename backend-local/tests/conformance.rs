//! The shared conformance suite against the in-memory bus.

use std::sync::Arc;

use tidings_core::conformance::{Harness, Timing};
use tidings_core::Bus;
use tidings_local::LocalBackend;

struct Local;

impl Harness for Local {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(LocalBackend::new()))
    }
    fn timing(&self) -> Timing {
        Timing::FAST
    }
}

/// The local bus with `nack_delay` turned off, so the runtime's hold-then-nack fallback is what runs.
struct LocalWithoutNackDelay;

impl Harness for LocalWithoutNackDelay {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(LocalBackend::new().without_nack_delay()))
    }
    fn timing(&self) -> Timing {
        Timing::FAST
    }
}

tidings_core::conformance_tests!(
    local => Local,
    local_without_nack_delay => LocalWithoutNackDelay,
);

/// Load with injected failures, panics and slow handlers: every message ends acked or dead-lettered, in each of two
/// subscriptions.
#[test]
fn ledger_20000_messages_under_failures() {
    tidings_core::conformance::block_on(tidings_core::conformance::ledger(&Local, 20_000, false));
}

#[test]
fn ledger_exactly_once_has_no_duplicate_after_ack() {
    tidings_core::conformance::block_on(tidings_core::conformance::ledger(&Local, 5_000, true));
}
