//! Links into the tidings book (the manual, built from `docs/book` in the repository), for the CLI, the dashboard and
//! error messages that point a user to the page that explains. Every page named here exists: the facade's
//! `tests/book.rs` checks each against the book's sources.

/// Where the book is published. The pages are also in the repository, as Markdown, under `docs/book/src/`.
pub const BASE: &str = "https://example.invalid/tidings/book";

/// The semantics table and the concepts.
pub const CONCEPTS: &str = "concepts/index.html";
/// Retries, backoff and the dead-letter queue (reading and redriving).
pub const DEAD_LETTERS: &str = "concepts/retries-and-dead-letters.html";
/// Every configuration key, the file and the environment overrides.
pub const CONFIGURATION: &str = "configuration.html";
/// Choosing a backend: the table of backends.
pub const BACKENDS: &str = "backends/index.html";
/// The `tidings` CLI.
pub const CLI: &str = "cli.html";
/// The dashboard.
pub const DASHBOARD: &str = "dashboard.html";
/// Spans, metrics and the OpenTelemetry set-up.
pub const OBSERVABILITY: &str = "observability.html";
/// Operating in production: permissions, provisioning, scaling, upgrades.
pub const PRODUCTION: &str = "production.html";
/// The SQL backends' permissions: what a role needs to provision, and to run on tables that exist.
pub const SQL_PERMISSIONS: &str = "backends/sql.html#permissions";
/// The transactional inbox: its guarantee, its table and its window.
pub const INBOX: &str = "inbox.html";

/// The pages named above, for the check that each exists.
pub const PAGES: &[&str] = &[
    CONCEPTS,
    DEAD_LETTERS,
    CONFIGURATION,
    BACKENDS,
    CLI,
    DASHBOARD,
    OBSERVABILITY,
    PRODUCTION,
    SQL_PERMISSIONS,
    INBOX,
];

/// The page of a backend, by its name (`aws`, `gcp`, `nats`, `sqlite`, `postgres`, `local`); `None` for a name the
/// book has no page for.
pub fn backend_page(name: &str) -> Option<&'static str> {
    Some(match name {
        "local" => "backends/in-memory.html",
        "aws" => "backends/aws.html",
        "gcp" => "backends/gcp.html",
        "nats" => "backends/nats.html",
        "sqlite" | "postgres" => "backends/sql.html",
        _ => return None,
    })
}

/// The address of `page` (one of the constants above, or [`backend_page`]'s answer).
///
/// ```
/// use tidings_core::book;
/// assert_eq!(book::url(book::CLI), "https://example.invalid/tidings/book/cli.html");
/// ```
pub fn url(page: &str) -> String {
    format!("{BASE}/{page}")
}
