//! The shared conformance suite against SNS + SQS on LocalStack.

mod support;

use std::sync::Arc;

use tidings_core::conformance::{Harness, Timing};
use tidings_core::Bus;

struct Aws;

impl Harness for Aws {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(support::backend(support::config()).await))
    }
    fn timing(&self) -> Timing {
        Timing::SECONDS
    }
}

tidings_core::conformance_tests!(aws => Aws; lacks: [bounded_backlog]);

/// Load with injected failures, panics and slow handlers against LocalStack (bounded: 1,000 messages).
#[test]
fn ledger_1000_messages_under_failures() {
    tidings_core::conformance::block_on(tidings_core::conformance::ledger(&Aws, 1_000, false));
}
