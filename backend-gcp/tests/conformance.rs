//! The shared conformance suite against Google's Pub/Sub emulator.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tidings_core::conformance::{Harness, Timing};
use tidings_core::Bus;

struct Gcp;

impl Harness for Gcp {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(support::backend(support::config()).await))
    }
    fn timing(&self) -> Timing {
        Timing {
            ack_deadline: Duration::from_secs(2),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(2),
            patience: Duration::from_secs(30),
        }
    }
}

tidings_core::conformance_tests!(gcp => Gcp);

/// Load with injected failures, panics and slow handlers against the emulator (bounded: 1,000 messages).
#[test]
fn ledger_1000_messages_under_failures() {
    tidings_core::conformance::block_on(tidings_core::conformance::ledger(&Gcp, 1_000, false));
}
