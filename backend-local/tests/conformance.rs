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
