//! The `[sqlite]` and `[postgres]` config sections (env `TIDINGS_SQLITE__*`, `TIDINGS_POSTGRES__*`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use tidings_core::backend::cloud::Provisioning;

/// Default largest message, payload plus attributes: 10 MiB, as on the local bus.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// The database file when `sqlite.path` is not set, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = ".tidings/bus.db";
/// The server when neither `postgres.url` nor `DATABASE_URL` is set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Settings of the SQLite backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file, created on first use with its directory (default `.tidings/bus.db`).
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// How long a statement waits for another process's write lock before failing.
    #[serde(default = "default_busy", with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// Longest pause between two looks at `PRAGMA data_version` when the file is idle (the look is adaptive:
    /// right after a change it is 2 ms, doubling while nothing changes).
    #[serde(default = "default_sqlite_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Largest message in bytes (payload plus attributes).
    #[serde(default = "default_max")]
    pub max_message_size: usize,
    /// `auto` (create tables), `verify` (check them) or `off`.
    #[serde(default)]
    pub provisioning: Provisioning,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: default_path(),
            busy_timeout: default_busy(),
            poll_interval: default_sqlite_poll(),
            max_message_size: default_max(),
            provisioning: Provisioning::Auto,
        }
    }
}

impl SqliteConfig {
    /// The defaults with another database file.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), ..Self::default() }
    }
}

/// Settings of the PostgreSQL backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// Connection URL; default `DATABASE_URL`, then `postgres://postgres@127.0.0.1:5432/test`.
    #[serde(default)]
    pub url: Option<String>,
    /// The schema holding tidings' tables (created by `provisioning = "auto"`).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Connections in the pool.
    #[serde(default = "default_connections")]
    pub max_connections: u32,
    /// How often an idle subscription looks for work when no notification came (LISTEN/NOTIFY wakes it sooner;
    /// while the listener is reconnecting, this is the only wake-up).
    #[serde(default = "default_pg_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Largest message in bytes (payload plus attributes).
    #[serde(default = "default_max")]
    pub max_message_size: usize,
    /// `auto` (create the schema and tables), `verify` (check them) or `off`.
    #[serde(default)]
    pub provisioning: Provisioning,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: None,
            schema: default_schema(),
            max_connections: default_connections(),
            poll_interval: default_pg_poll(),
            max_message_size: default_max(),
            provisioning: Provisioning::Auto,
        }
    }
}

impl PostgresConfig {
    /// The defaults with another connection URL and schema.
    pub fn at(url: impl Into<String>, schema: impl Into<String>) -> Self {
        Self { url: Some(url.into()), schema: schema.into(), ..Self::default() }
    }

    /// `postgres.url`, else `DATABASE_URL`, else the local default.
    pub fn resolved_url(&self) -> String {
        self.url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_string())
    }
}

fn default_path() -> PathBuf {
    PathBuf::from(DEFAULT_SQLITE_PATH)
}
fn default_busy() -> Duration {
    Duration::from_secs(5)
}
fn default_sqlite_poll() -> Duration {
    Duration::from_millis(100)
}
fn default_pg_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_max() -> usize {
    DEFAULT_MAX_MESSAGE_SIZE
}
fn default_schema() -> String {
    "tidings".into()
}
fn default_connections() -> u32 {
    10
}

/// Checks a schema name: 1-48 characters of `[a-z0-9_]`, not starting with a digit (it is spliced into SQL).
pub fn validate_schema(schema: &str) -> tidings_core::Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit()
        && !schema.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(tidings_core::Error::config(format!(
            "postgres.schema {schema:?} is invalid: it must be 1-48 characters of [a-z0-9_], not starting with a digit \
             or `pg_`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked_with_the_rule() {
        validate_schema("tidings").unwrap();
        validate_schema("t_1").unwrap();
        for bad in ["", "1a", "Tidings", "a;drop", "pg_x", &"a".repeat(49)] {
            let e = validate_schema(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")) && e.contains("[a-z0-9_]"), "{e}");
        }
    }

    #[test]
    fn sections_parse_durations_and_reject_unknown_keys() {
        let s = tidings_core::Settings::from_toml("[sqlite]\npath = \"x.db\"\npoll_interval = \"20ms\"").unwrap();
        let c: SqliteConfig = s.section("sqlite").unwrap();
        assert_eq!((c.path, c.poll_interval), (PathBuf::from("x.db"), Duration::from_millis(20)));
        let s = tidings_core::Settings::from_toml("[postgres]\nshema = \"x\"").unwrap();
        let e = s.section::<PostgresConfig>("postgres").unwrap_err().to_string();
        assert!(e.contains("shema"), "{e}");
    }
}
