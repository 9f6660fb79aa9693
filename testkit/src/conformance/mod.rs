//! The behaviour suite every backend must pass, generic over the backend through a [`Harness`]. A backend crate
//! takes `tidings-testkit` as a dev-dependency and runs all of it with one macro call in a test file; test names read
//! `conformance::<backend>::<behaviour>`:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use tidings_core::Bus;
//! use tidings_testkit::conformance::{Harness, Timing};
//! use tidings_testkit::Reference;
//!
//! struct Ref;
//!
//! impl Harness for Ref {
//!     async fn bus(&self) -> Bus {
//!         Bus::new(Arc::new(Reference::new()))
//!     }
//!     fn timing(&self) -> Timing {
//!         Timing::FAST
//!     }
//! }
//!
//! tidings_testkit::conformance_tests!(reference => Ref; lacks: [bounded_backlog]);
//! # fn main() {}
//! ```
//!
//! (`testkit/tests/conformance.rs` runs exactly this against the [reference backend](crate::reference), and each
//! backend crate's `tests/conformance.rs` against its own backend.)
//!
//! A case that needs a capability the backend lacks is declared in the macro call, `backend => harness; lacks:
//! [ordering, exactly_once]`, and generated as `#[ignore = "backend lacks the `ordering` capability"]`, so the test
//! runner reports it as ignored, by name, never as passed. A gated case run on a backend that lacks its capability
//! fails, asking for the declaration.
//!
//! One gate is about the broker the harness runs against, not a backend capability: `clean_close`, the five cases
//! that close a subscription and expect what it left unacked, or what is published next, at its successor within
//! their patience. A broker that keeps delivering to a consumer after it closed, as Google's stock Pub/Sub emulator
//! does with a closed streaming pull (a "ghost" that holds what it takes for its ack deadline, again and again),
//! declares `lacks: [clean_close]`.
//!
//! The suite uses only the public API of `tidings-core`, as a backend's own tests do.

mod backlog;
mod batch;
pub mod capture;
mod delay;
mod delivery;
mod faults;
pub mod foreign;
pub mod inbox;
mod leases;
mod ledger;
mod operator;
mod ordering;
pub mod proxy;
pub mod recorded;
mod retries;
mod shutdown;
mod support;
mod trace;
mod validation;

use std::future::Future;
use std::time::Duration;

pub use backlog::*;
pub use batch::*;
pub use delay::*;
pub use delivery::*;
pub use faults::{network_faults, FaultReport};
pub use inbox::{
    inbox_batch_commits_only_acked_rows_postgres, inbox_batch_commits_only_acked_rows_sqlite,
    inbox_batch_exactly_once_effect_under_faults_postgres, inbox_batch_exactly_once_effect_under_faults_sqlite,
    inbox_concurrent_copies_never_both_commit_postgres, inbox_concurrent_copies_never_both_commit_sqlite,
    inbox_exactly_once_effect_under_faults_postgres, inbox_exactly_once_effect_under_faults_sqlite,
    inbox_lost_ack_after_commit_postgres, inbox_lost_ack_after_commit_sqlite,
    inbox_outbox_publish_happens_once_postgres, inbox_outbox_publish_happens_once_sqlite,
    inbox_redriven_dead_letter_is_processed_postgres, inbox_redriven_dead_letter_is_processed_sqlite,
};
pub use leases::*;
pub use ledger::ledger;
pub use operator::operator_story;
pub use ordering::*;
pub use retries::*;
pub use shutdown::*;
pub use trace::*;
pub use validation::*;

use tidings_core::Bus;

/// Time scale of a backend's tests: brokers with coarse timers (SQS seconds, Pub/Sub's 10 s minimum ack deadline)
/// use larger values than the in-memory bus.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Ack deadline of test subscriptions.
    pub ack_deadline: Duration,
    /// Min backoff of test subscriptions.
    pub min_backoff: Duration,
    /// Max backoff of test subscriptions.
    pub max_backoff: Duration,
    /// How long a test waits for an expected event before failing.
    pub patience: Duration,
}

impl Timing {
    /// For in-process backends: sub-second deadlines and backoffs.
    pub const FAST: Timing = Timing {
        ack_deadline: Duration::from_millis(300),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        patience: Duration::from_secs(10),
    };

    /// For brokers with whole-second timers (SQS visibility timeouts) or client-side deadlines over a network
    /// (the Pub/Sub emulator).
    pub const SECONDS: Timing = Timing {
        ack_deadline: Duration::from_secs(2),
        min_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(2),
        patience: Duration::from_secs(30),
    };
}

/// Makes buses for the suite.
pub trait Harness: Send + Sync + 'static {
    /// A bus on the backend under test. Tests use unique topic names, so buses may share one broker.
    fn bus(&self) -> impl Future<Output = Bus> + Send;
    /// The backend's time scale.
    fn timing(&self) -> Timing;
}

/// Held by the cases that install or use process-wide tracing (the trace case records every span while it runs) and
/// by the ledger (timing-sensitive at scale), so the two never overlap in one test process.
pub(crate) static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs one test on a fresh two-worker tokio runtime (used by [`conformance_tests!`](crate::conformance_tests)).
pub fn block_on<F: Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Generates `mod conformance { mod <backend> { #[test] fn <behaviour>() ... } }` running the whole suite against
/// each `backend => harness` pair; `; lacks: [capability, ...]` marks the cases those capabilities gate as ignored.
#[macro_export]
macro_rules! conformance_tests {
    ($($backend:ident => $harness:expr $(; lacks: [$($cap:ident),* $(,)?])?),+ $(,)?) => {
        mod conformance {
            $(pub mod $backend {
                #[allow(unused_imports)]
                use super::super::*;
                $crate::__conformance_cases!($harness;
                    round_trip_with_attributes_and_metadata,
                    publish_batch_returns_ids_in_order,
                    only_messages_published_after_subscribing,
                    fan_out_to_two_subscriptions,
                    independence_of_a_stalled_subscription,
                    ack_removes_the_message,
                    err_redelivers_after_backoff_with_rising_attempt,
                    dlq_after_max_retries,
                    no_retries_dead_letters_first_failure,
                    panic_counts_as_failure,
                    poison_message_goes_to_dlq,
                    unrecoverable_error_dead_letters_at_once,
                    redrive_from_dlq,
                    ack_deadline_expiry_redelivers,
                    lease_extension_prevents_redelivery,
                    max_concurrency_never_exceeded,
                    waiting_until_quiet_works_on_every_backend,
                    invalid_names_are_rejected,
                    invalid_subscription_configs_are_rejected,
                    duplicate_subscription_is_rejected,
                    concurrent_duplicate_subscribe_is_rejected,
                    the_bus_refuses_work_after_shutdown,
                    handlers_are_told_of_shutdown,
                    unsupported_topic_configs_are_refused_at_declaration,
                    oversized_message_is_rejected,
                    invalid_publish_options_are_rejected,
                    invalid_batch_sends_nothing,
                    foreign_bad_input_goes_to_dlq,
                    trace_context_links_each_attempt_to_the_publish,
                    delayed_delivery_is_never_early,
                    delayed_message_takes_its_place_in_its_key_at_due_time,
                    delayed_attempts_count_from_the_first_real_one_and_redrive_is_at_once,
                    delay_beyond_retention_is_refused_and_cancel_is_honest,
                    foreign_due_time_attribute_is_held,
                    held_delayed_messages_beyond_the_window_do_not_stall_a_due_one,
                    repeated_holds_never_dead_letter_a_delayed_message,
                    inbox_exactly_once_effect_under_faults_sqlite,
                    inbox_exactly_once_effect_under_faults_postgres,
                    inbox_outbox_publish_happens_once_sqlite,
                    inbox_outbox_publish_happens_once_postgres,
                    inbox_concurrent_copies_never_both_commit_sqlite,
                    inbox_concurrent_copies_never_both_commit_postgres,
                    inbox_lost_ack_after_commit_sqlite,
                    inbox_lost_ack_after_commit_postgres,
                    inbox_redriven_dead_letter_is_processed_sqlite,
                    inbox_redriven_dead_letter_is_processed_postgres,
                    inbox_batch_exactly_once_effect_under_faults_sqlite,
                    inbox_batch_exactly_once_effect_under_faults_postgres,
                    inbox_batch_commits_only_acked_rows_sqlite,
                    inbox_batch_commits_only_acked_rows_postgres,
                    batches_fill_to_max_messages_or_leave_after_max_wait,
                    batch_outcomes_and_attempts_are_per_message,
                    batch_leases_are_extended_while_it_runs,
                    batch_panic_fails_every_message,
                    batch_with_a_wrong_outcome_count_is_retried_whole,
                    invalid_batch_configs_are_refused,
                    batch_never_holds_a_message_before_it_is_due,
                    batch_spans_cover_the_call_and_each_message,
                    backlog_shows_scheduled_messages_apart,
                );
                $crate::__conformance_gated!($harness; [$($($cap)*)?]; ordering; ordering_per_key,
                    batch_order_per_key_holds_across_batches);
                $crate::__conformance_gated!($harness; [$($($cap)*)?]; exactly_once; exactly_once_dedup,
                    exactly_once_republish_with_another_time_is_a_duplicate, batch_exactly_once_dedup);
                $crate::__conformance_gated!($harness; [$($($cap)*)?]; bounded_backlog;
                    bounded_backlog_fails_or_waits_at_the_limit);
                $crate::__conformance_gated!($harness; [$($($cap)*)?]; clean_close; graceful_shutdown_loses_nothing,
                    shutdown_timeout_leaves_unfinished_unacked, bus_shutdown_returns_within_its_timeout_plus_the_margin,
                    restart_after_shutdown_resumes_at_once, batch_is_told_of_shutdown_and_left_unacked);
            })+
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let harness = $harness;
                $crate::conformance::block_on($crate::conformance::$name(&harness));
            }
        )*
    };
}

/// The cases one capability gates: ordinary tests, or ignored ones when the capability is in the `lacks` list.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_gated {
    ($harness:expr; []; $cap:ident; $($name:ident),*) => {
        $crate::__conformance_cases!($harness; $($name),*);
    };
    ($harness:expr; [ordering $($rest:ident)*]; ordering; $($name:ident),*) => {
        $crate::__conformance_ignored!("backend lacks the `ordering` capability"; $($name),*);
    };
    ($harness:expr; [exactly_once $($rest:ident)*]; exactly_once; $($name:ident),*) => {
        $crate::__conformance_ignored!("backend lacks the `exactly_once` capability"; $($name),*);
    };
    ($harness:expr; [bounded_backlog $($rest:ident)*]; bounded_backlog; $($name:ident),*) => {
        $crate::__conformance_ignored!("backend lacks the `bounded_backlog` capability"; $($name),*);
    };
    ($harness:expr; [clean_close $($rest:ident)*]; clean_close; $($name:ident),*) => {
        $crate::__conformance_ignored!(
            "broker lacks `clean_close`: a closed consumer stays behind as a ghost that takes later messages \
             (the stock Pub/Sub emulator's streaming pulls; the GCP book page has the details)";
            $($name),*
        );
    };
    ($harness:expr; [$other:ident $($rest:ident)*]; $cap:ident; $($name:ident),*) => {
        $crate::__conformance_gated!($harness; [$($rest)*]; $cap; $($name),*);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_ignored {
    ($reason:literal; $($name:ident),*) => {
        $(
            #[test]
            #[ignore = $reason]
            fn $name() {}
        )*
    };
}
