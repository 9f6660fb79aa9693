//! The shared conformance suite and the ledger on both dialects: SQLite on a temporary file, PostgreSQL in a fresh
//! schema of the machine's server.

mod support;

use support::{Postgres, Sqlite};

tidings_testkit::conformance_tests!(
    sqlite => Sqlite; lacks: [bounded_backlog],
    postgres => Postgres; lacks: [bounded_backlog],
);

/// Load with injected failures, panics and slow handlers: every message ends acked or dead-lettered, in each of two
/// subscriptions.
#[test]
fn ledger_sqlite_2000_messages_under_failures() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Sqlite, 2_000, false));
}

#[test]
fn ledger_sqlite_exactly_once_has_no_duplicate_after_ack() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Sqlite, 1_000, true));
}

#[test]
fn ledger_postgres_2000_messages_under_failures() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Postgres, 2_000, false));
}

#[test]
fn ledger_postgres_exactly_once_has_no_duplicate_after_ack() {
    tidings_testkit::conformance::block_on(tidings_testkit::conformance::ledger(&Postgres, 1_000, true));
}
