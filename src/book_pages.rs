//! The book (`docs/book/src`) as doc tests: every Rust block of every page compiles against this crate (with the
//! features the test command builds), and every block not marked `no_run` runs, in `cargo test --doc`. The pages are
//! included here rather than copied, so a page cannot drift from what compiles; `tests/book.rs` checks that every page
//! of `SUMMARY.md` is listed below (and that README's Rust blocks are copies of `examples/quickstart.rs`, since
//! GitHub would show a doc test's hidden lines).

macro_rules! pages {
    ($($module:ident => $path:literal,)*) => {
        $(
            #[doc = include_str!(concat!("../", $path))]
            mod $module {}
        )*
    };
}

pages! {
    introduction => "docs/book/src/introduction.md",
    getting_started => "docs/book/src/getting-started.md",
    concepts => "docs/book/src/concepts/index.md",
    concepts_topics => "docs/book/src/concepts/topics.md",
    concepts_subscriptions => "docs/book/src/concepts/subscriptions.md",
    concepts_delivery => "docs/book/src/concepts/delivery.md",
    concepts_ordering => "docs/book/src/concepts/ordering.md",
    concepts_retries_and_dead_letters => "docs/book/src/concepts/retries-and-dead-letters.md",
    concepts_leases => "docs/book/src/concepts/leases.md",
    concepts_shutdown => "docs/book/src/concepts/shutdown.md",
    concepts_backlog => "docs/book/src/concepts/backlog.md",
    concepts_delayed_delivery => "docs/book/src/concepts/delayed-delivery.md",
    concepts_batch_handlers => "docs/book/src/concepts/batch-handlers.md",
    configuration => "docs/book/src/configuration.md",
    outbox => "docs/book/src/outbox.md",
    inbox => "docs/book/src/inbox.md",
    testing => "docs/book/src/testing.md",
    backends => "docs/book/src/backends/index.md",
    backends_in_memory => "docs/book/src/backends/in-memory.md",
    backends_aws => "docs/book/src/backends/aws.md",
    backends_gcp => "docs/book/src/backends/gcp.md",
    backends_nats => "docs/book/src/backends/nats.md",
    backends_sql => "docs/book/src/backends/sql.md",
    wire_format => "docs/book/src/wire-format.md",
    observability => "docs/book/src/observability.md",
    cli => "docs/book/src/cli.md",
    dashboard => "docs/book/src/dashboard.md",
    production => "docs/book/src/production.md",
    benchmarks => "docs/book/src/benchmarks.md",
    writing_a_backend => "docs/book/src/writing-a-backend.md",
}
