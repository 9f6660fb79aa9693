//! The shared conformance suite against SNS + SQS on LocalStack.

mod support;

use std::sync::Arc;

use tidings_core::Bus;
use tidings_testkit::conformance::{Harness, Timing};

struct Aws;

impl Harness for Aws {
    async fn bus(&self) -> Bus {
        Bus::new(Arc::new(support::backend(support::config()).await))
    }
    fn timing(&self) -> Timing {
        Timing::SECONDS
    }
}

tidings_testkit::conformance_tests!(aws => Aws; lacks: [bounded_backlog]);

/// The default `aws.wait_time` (20 s long polls) rather than the suite's 1 s.
struct AwsLongPolls;

impl Harness for AwsLongPolls {
    async fn bus(&self) -> Bus {
        let mut config = support::config();
        config.wait_time = tidings_aws::AwsConfig::default().wait_time;
        Bus::new(Arc::new(support::backend(config).await))
    }
    fn timing(&self) -> Timing {
        Timing::SECONDS
    }
}

/// The bound on `Bus::shutdown` with the 20 s long polls applications have by default: an idle receive's poll, and
/// the next receive beside each busy handler, must not hold the shutdown past its timeout plus the margin.
#[test]
fn bus_shutdown_is_bounded_with_20_s_long_polls() {
    tidings_testkit::conformance::block_on(
        tidings_testkit::conformance::bus_shutdown_returns_within_its_timeout_plus_the_margin(&AwsLongPolls),
    );
}

/// Load with injected failures, panics and slow handlers against LocalStack (bounded: 1,000 messages).
#[test]
fn ledger_1000_messages_under_failures() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Aws, 1_000, false));
}
