//! Golden wire fixtures of the SQL backends (SQLite and PostgreSQL): the `deliveries` rows tidings writes for a
//! subscription (message id, payload, the `attributes` JSON with the trace context under `tidings.trace.*`, ordering
//! key, publish time, attempts, state, `dedup` on exactly-once topics), a dead-lettered row (state, reason, attempts)
//! and the row after a redrive (the SQL backend moves the row back rather than writing a copy). See
//! `tests/golden_support/mod.rs` at the workspace root for the scheme; fixtures are `tests/golden/<dialect>_<case>.json`;
//! record with `TIDINGS_WRITE_GOLDEN=1 cargo test -p tidings-sql --test golden`.

#[path = "../../tests/golden_support/mod.rs"]
mod golden;
mod support;

use std::sync::Arc;
use std::time::Duration;

use golden::{Case, Fixture};
use serde_json::{json, Value};
use sqlx::Row;
use tidings_core::{Bus, SubscriptionConfig};

/// Columns whose values are times or lease tokens of the run: compared as present or absent only.
const VOLATILE: [&str; 5] = ["publish_time", "enqueued_at", "visible_at", "dead_at", "lease"];

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    fn tables(self) -> (String, String) {
        match self {
            Dialect::Sqlite => ("tidings_subscriptions".into(), "tidings_deliveries".into()),
            Dialect::Postgres => {
                let s = support::pg_schema();
                (format!("{s}.subscriptions"), format!("{s}.deliveries"))
            }
        }
    }

    async fn bus(self, prefix: &str) -> Bus {
        let backend = match self {
            Dialect::Sqlite => support::sqlite_backend().await,
            Dialect::Postgres => {
                let mut c = support::pg_config();
                c.poll_interval = Duration::from_millis(100);
                support::require_pg().await;
                tidings_sql::SqlBackend::postgres(c).await.expect("open the PostgreSQL backend")
            }
        };
        Bus::builder(Arc::new(backend)).settings(golden::settings(prefix, "")).build()
    }
}

const COLUMNS: &str = "s.topic, s.name, d.message_id, d.payload, d.attributes, d.ordering_key, d.publish_time, \
                       d.enqueued_at, d.visible_at, d.lease, d.attempts, d.state, d.dedup, d.reason, d.dead_at";

/// The rows of subscription `name`, as stored, in delivery order.
async fn rows(dialect: Dialect, name: &str) -> Vec<Value> {
    let (subs, deliveries) = dialect.tables();
    let q =
        format!("SELECT {COLUMNS} FROM {deliveries} d JOIN {subs} s ON s.id = d.sub WHERE s.name = $1 ORDER BY d.seq");
    macro_rules! rows {
        ($pool:expr) => {{
            let rows = sqlx::query(&q).bind(name).fetch_all($pool).await.expect("SELECT the deliveries");
            rows.iter()
                .map(|r| {
                    json!({
                        "subscription": { "topic": r.get::<String, _>("topic"), "name": r.get::<String, _>("name") },
                        "message_id": r.get::<String, _>("message_id"),
                        "payload": String::from_utf8(r.get::<Vec<u8>, _>("payload")).expect("UTF-8 JSON"),
                        "attributes": r.get::<String, _>("attributes"),
                        "ordering_key": r.get::<Option<String>, _>("ordering_key"),
                        "publish_time": r.get::<i64, _>("publish_time"),
                        "enqueued_at": r.get::<i64, _>("enqueued_at"),
                        "visible_at": r.get::<i64, _>("visible_at"),
                        "lease": r.get::<Option<i64>, _>("lease"),
                        "attempts": r.get::<i64, _>("attempts"),
                        "state": r.get::<i64, _>("state"),
                        "dedup": r.get::<bool, _>("dedup"),
                        "reason": r.get::<Option<String>, _>("reason"),
                        "dead_at": r.get::<Option<i64>, _>("dead_at"),
                    })
                })
                .collect()
        }};
    }
    // A pool per call, closed after it (each test has its own runtime).
    match dialect {
        Dialect::Sqlite => {
            let pool = sqlite_pool().await;
            let rows = rows!(&pool);
            pool.close().await;
            rows
        }
        Dialect::Postgres => {
            let pool = pg_pool().await;
            let rows = rows!(&pool);
            pool.close().await;
            rows
        }
    }
}

async fn pg_pool() -> sqlx::PgPool {
    sqlx::PgPool::connect(&support::pg_url()).await.expect("connect to PostgreSQL")
}

async fn sqlite_pool() -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(support::sqlite_path())
        .busy_timeout(Duration::from_secs(30));
    sqlx::SqlitePool::connect_with(options).await.expect("open the SQLite file")
}

/// Writes one fixture row for subscription `name`.
async fn insert(dialect: Dialect, name: &str, row: &Value) {
    let (subs, deliveries) = dialect.tables();
    let q = format!(
        "INSERT INTO {deliveries} (sub, message_id, payload, attributes, ordering_key, publish_time, enqueued_at, \
         visible_at, lease, attempts, state, dedup, reason, dead_at) SELECT id, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
         $11, $12, $13, $14 FROM {subs} WHERE name = $1"
    );
    macro_rules! insert {
        ($pool:expr) => {{
            let done = sqlx::query(&q)
                .bind(name)
                .bind(row["message_id"].as_str().unwrap())
                .bind(row["payload"].as_str().unwrap().as_bytes().to_vec())
                .bind(row["attributes"].as_str().unwrap())
                .bind(row["ordering_key"].as_str())
                .bind(row["publish_time"].as_i64().unwrap())
                .bind(row["enqueued_at"].as_i64().unwrap())
                .bind(row["visible_at"].as_i64().unwrap())
                .bind(row["lease"].as_i64())
                .bind(row["attempts"].as_i64().unwrap())
                .bind(row["state"].as_i64().unwrap())
                .bind(row["dedup"].as_bool().unwrap())
                .bind(row["reason"].as_str())
                .bind(row["dead_at"].as_i64())
                .execute($pool)
                .await
                .expect("INSERT the fixture row");
            assert_eq!(done.rows_affected(), 1, "subscription {name} is registered");
        }};
    }
    match dialect {
        Dialect::Sqlite => {
            let pool = sqlite_pool().await;
            insert!(&pool);
            pool.close().await;
        }
        Dialect::Postgres => {
            let pool = pg_pool().await;
            insert!(&pool);
            pool.close().await;
        }
    }
}

fn sub_name(prefix: &str) -> String {
    format!("{prefix}orders--{}", golden::SUBSCRIPTION)
}

/// The one row of subscription `name` once `ready` accepts it, within the patience.
async fn row(dialect: Dialect, name: &str, ready: impl Fn(&Value) -> bool) -> Value {
    golden::eventually(&format!("a {} delivery row of {name}", dialect.name()), || async {
        let rows = rows(dialect, name).await;
        match rows.as_slice() {
            [one] if ready(one) => Some(one.clone()),
            _ => None,
        }
    })
    .await
}

/// Publishes the case with today's tidings and reads the subscription's row: pending (the subscription provisioned
/// and stopped), dead, or pending again after a redrive.
async fn record(dialect: Dialect, case: Case) -> Fixture {
    let prefix = golden::fresh_prefix();
    let bus = dialect.bus(&prefix).await;
    let name = sub_name(&prefix);
    let (sub, _rx) = golden::subscribe(&bus, &case, SubscriptionConfig::DEFAULT).await;
    if !case.dead_letter {
        sub.shutdown(Duration::from_secs(5)).await;
    }
    case.publish(&bus).await;
    let raw = if case.dead_letter {
        let dead = row(dialect, &name, |r| r["state"] == 1).await;
        sub.shutdown(Duration::from_secs(5)).await;
        if case.redrive {
            assert_eq!(sub.redrive_all().await.expect("redrive"), 1);
            row(dialect, &name, |r| r["state"] == 0).await
        } else {
            dead
        }
    } else {
        row(dialect, &name, |_| true).await
    };
    bus.shutdown(Duration::from_secs(5)).await;
    let (id, ts) = (raw["message_id"].as_str().unwrap().to_string(), raw["publish_time"].as_i64().unwrap());
    let stored = raw["attributes"].as_str().unwrap();
    let attributes = if stored.is_empty() { Default::default() } else { serde_json::from_str(stored).unwrap() };
    let (_, trace) = tidings_core::trace::split_trace(attributes);
    Fixture::new(dialect.name(), &case, &prefix, &id, ts, raw).with_stored_trace(trace.as_ref())
}

/// Inserts the fixture's row with plain SQL for a fresh subscription and checks what tidings reads from it.
async fn decode(dialect: Dialect, f: Fixture) {
    let case = *CASES.iter().find(|c| c.name == f.case).expect("a known case");
    let prefix = golden::fresh_prefix();
    let bus = dialect.bus(&prefix).await;
    let receiving = Case { dead_letter: false, ..case };
    // Registered, stopped, the row written, started again: a row written with plain SQL sends no notification
    // (the tables are no write interface), so the subscription finds it on its first look instead.
    let (first, _) = golden::subscribe(&bus, &receiving, SubscriptionConfig::DEFAULT).await;
    first.shutdown(Duration::from_secs(5)).await;
    insert(dialect, &sub_name(&prefix), &f.raw).await;
    let (sub, mut rx) = golden::subscribe(&bus, &receiving, SubscriptionConfig::DEFAULT).await;
    golden::assert_decoded(&bus, &case, &f, &sub, &mut rx).await;
}

const CASES: [Case; 8] = [
    golden::PLAIN,
    golden::ATTRIBUTES,
    golden::ORDERING_KEY,
    golden::TRACE,
    golden::EXACTLY_ONCE_CASE,
    golden::DEAD_LETTER,
    golden::DEAD_LETTER_ORDERED,
    golden::REDRIVE,
];

async fn run(dialect: Dialect, case: Case) {
    let file = format!("{}_{}", dialect.name(), case.name);
    golden::run_named(&file, &VOLATILE, case, |c| record(dialect, c), |f| decode(dialect, f)).await;
}

macro_rules! golden_cases {
    ($($test:ident: $dialect:expr, $case:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            run($dialect, $case).await;
        }
    )*};
}

golden_cases! {
    sqlite_plain: Dialect::Sqlite, golden::PLAIN;
    sqlite_attributes: Dialect::Sqlite, golden::ATTRIBUTES;
    sqlite_ordering_key: Dialect::Sqlite, golden::ORDERING_KEY;
    sqlite_trace_context: Dialect::Sqlite, golden::TRACE;
    sqlite_exactly_once_dedup: Dialect::Sqlite, golden::EXACTLY_ONCE_CASE;
    sqlite_dead_letter: Dialect::Sqlite, golden::DEAD_LETTER;
    sqlite_dead_letter_ordered: Dialect::Sqlite, golden::DEAD_LETTER_ORDERED;
    sqlite_redriven_row: Dialect::Sqlite, golden::REDRIVE;
    postgres_plain: Dialect::Postgres, golden::PLAIN;
    postgres_attributes: Dialect::Postgres, golden::ATTRIBUTES;
    postgres_ordering_key: Dialect::Postgres, golden::ORDERING_KEY;
    postgres_trace_context: Dialect::Postgres, golden::TRACE;
    postgres_exactly_once_dedup: Dialect::Postgres, golden::EXACTLY_ONCE_CASE;
    postgres_dead_letter: Dialect::Postgres, golden::DEAD_LETTER;
    postgres_dead_letter_ordered: Dialect::Postgres, golden::DEAD_LETTER_ORDERED;
    postgres_redriven_row: Dialect::Postgres, golden::REDRIVE;
}
