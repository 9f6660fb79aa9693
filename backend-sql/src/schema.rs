//! The tables, their DDL per dialect, idempotent migration and the schema version check.
//!
//! | table | one row per |
//! |---|---|
//! | `subscriptions` | subscription (`id`, `topic`, `name` = the subscription's resource name) |
//! | `deliveries` | message x subscription: payload, lease, attempts, state (0 pending, 1 dead, 2 acked and kept for de-duplication) |
//! | `schema_version` | one row: the layout version these tables were created with |

use tidings_core::{Error, Result};

/// Layout version written by this build. Any other version found in the database is an error.
pub const SCHEMA_VERSION: i64 = 1;

/// Delivery states.
pub(crate) const PENDING: i64 = 0;
pub(crate) const DEAD: i64 = 1;
pub(crate) const ACKED: i64 = 2;

/// Fully qualified table names: `tidings_<table>` in SQLite, `<schema>.<table>` in PostgreSQL.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub subs: String,
    pub deliveries: String,
    pub version: String,
    /// Prefix of index names (unqualified: PostgreSQL puts an index in its table's schema).
    pub index: String,
}

impl Tables {
    pub fn sqlite() -> Self {
        Tables {
            subs: "tidings_subscriptions".into(),
            deliveries: "tidings_deliveries".into(),
            version: "tidings_schema_version".into(),
            index: "tidings_deliveries".into(),
        }
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub fn postgres(schema: &str) -> Self {
        Tables {
            subs: format!("{schema}.subscriptions"),
            deliveries: format!("{schema}.deliveries"),
            version: format!("{schema}.schema_version"),
            index: "deliveries".into(),
        }
    }
}

/// Column types that differ between the dialects.
pub(crate) struct Types {
    pub serial_pk: &'static str,
    pub bytes: &'static str,
}

pub(crate) const SQLITE_TYPES: Types = Types { serial_pk: "INTEGER PRIMARY KEY", bytes: "BLOB" };
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) const POSTGRES_TYPES: Types = Types { serial_pk: "BIGSERIAL PRIMARY KEY", bytes: "BYTEA" };

/// `CREATE ... IF NOT EXISTS` statements, in order.
pub(crate) fn ddl(t: &Tables, ty: &Types) -> Vec<String> {
    let (s, d, v, i) = (&t.subs, &t.deliveries, &t.version, &t.index);
    vec![
        format!("CREATE TABLE IF NOT EXISTS {v} (version BIGINT NOT NULL)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {s} (id {pk}, topic TEXT NOT NULL, name TEXT NOT NULL UNIQUE, \
             created_at BIGINT NOT NULL)",
            pk = ty.serial_pk
        ),
        format!("CREATE INDEX IF NOT EXISTS {i}_subs_topic ON {s} (topic)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {d} (seq {pk}, sub BIGINT NOT NULL, message_id TEXT NOT NULL, \
             payload {b} NOT NULL, attributes TEXT NOT NULL, ordering_key TEXT, publish_time BIGINT NOT NULL, \
             enqueued_at BIGINT NOT NULL, visible_at BIGINT NOT NULL, lease BIGINT, attempts BIGINT NOT NULL DEFAULT 0, \
             state BIGINT NOT NULL DEFAULT 0, dedup BOOLEAN NOT NULL, reason TEXT, dead_at BIGINT)",
            pk = ty.serial_pk,
            b = ty.bytes
        ),
        format!("CREATE INDEX IF NOT EXISTS {i}_claim ON {d} (sub, state, seq)"),
        // Only keyed rows: unordered topics pay nothing for it.
        format!(
            "CREATE INDEX IF NOT EXISTS {i}_key ON {d} (sub, ordering_key, seq) WHERE state = 0 AND ordering_key IS \
             NOT NULL"
        ),
        format!("CREATE UNIQUE INDEX IF NOT EXISTS {i}_dedup ON {d} (sub, message_id) WHERE dedup"),
    ]
}

/// The error for a database whose tables were written by an incompatible version.
pub(crate) fn check_version(found: i64, where_: &str) -> Result<()> {
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    Err(Error::config(format!(
        "{where_} holds tidings tables of schema version {found}, but this build of tidings-sql reads and writes \
         version {SCHEMA_VERSION}: they are incompatible, so nothing was read or written. Use the tidings version \
         that created them, or point the backend at another database"
    )))
}

/// The error for `provisioning = "verify"` or `"off"` when the tables are missing.
pub(crate) fn not_provisioned(where_: &str, e: impl std::fmt::Display) -> Error {
    Error::config(format!(
        "{where_} has no tidings tables ({e}); run once with provisioning = \"auto\" (as a role that may create \
         them) to create them: {}",
        tidings_core::book::url(tidings_core::book::SQL_PERMISSIONS)
    ))
}
