//! The shared conformance suite against SNS + SQS on LocalStack.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tidings_core::conformance::{Harness, Timing};
use tidings_core::Bus;

struct Aws;

impl Harness for Aws {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(support::backend(support::config()).await))
    }
    fn timing(&self) -> Timing {
        // SQS visibility timeouts have whole-second granularity.
        Timing {
            ack_deadline: Duration::from_secs(2),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(2),
            patience: Duration::from_secs(30),
        }
    }
}

tidings_core::conformance_tests!(aws => Aws);

/// Load with injected failures, panics and slow handlers against LocalStack (bounded: 1,000 messages).
#[test]
fn ledger_1000_messages_under_failures() {
    tidings_core::conformance::block_on(tidings_core::conformance::ledger(&Aws, 1_000, false));
}
