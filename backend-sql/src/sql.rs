//! The statements, built once per backend from the table names. Placeholders are `$N`, which both PostgreSQL and
//! SQLite read; the dialects differ only where noted (`FOR UPDATE SKIP LOCKED`, `pg_notify`, renumbering).

use crate::schema::{Tables, ACKED, DEAD, PENDING};

/// Columns a claim returns.
pub(crate) const CLAIMED: &str = "seq, message_id, payload, attributes, ordering_key, publish_time, attempts";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug)]
pub(crate) struct Sql {
    pub dialect: Dialect,
    pub tables: Tables,
    /// Starts a transaction that writes: SQLite takes the write lock at once, so a read-then-write transaction
    /// never fails on a stale snapshot.
    pub begin: &'static str,
    pub register: String,
    pub lookup: String,
    /// $1 topic, $2 id, $3 payload, $4 attributes, $5 key, $6 publish time, $7 now, $8 dedup (PostgreSQL: $9 channel).
    pub publish: String,
    pub claim: String,
    pub claim_ordered: String,
    pub next_due: String,
    pub next_due_ordered: String,
    pub dead_letters: String,
    pub dead_candidates: String,
    pub renumber: String,
    pub backlog: String,
    pub dead_depth: String,
    pub sweep: String,
}

/// Only the oldest pending delivery of an ordering key may be claimed (head-of-line blocking across processes).
fn head(d: &str) -> String {
    format!(
        " AND (d.ordering_key IS NULL OR d.seq = (SELECT min(h.seq) FROM {d} h WHERE h.sub = d.sub AND h.state = \
         {PENDING} AND h.ordering_key IS NOT NULL AND h.ordering_key = d.ordering_key))"
    )
}

impl Sql {
    pub fn new(dialect: Dialect, tables: Tables) -> Self {
        let (s, d) = (&tables.subs, &tables.deliveries);
        let insert = format!(
            "INSERT INTO {d} (sub, message_id, payload, attributes, ordering_key, publish_time, enqueued_at, \
             visible_at, dedup) SELECT id, $2, $3, $4, $5, $6, $7, $7, $8 FROM {s} WHERE topic = $1 \
             ON CONFLICT (sub, message_id) WHERE dedup DO NOTHING"
        );
        let (publish, lock, begin, renumber) = match dialect {
            Dialect::Sqlite => (
                insert,
                "",
                "BEGIN IMMEDIATE",
                // Without AUTOINCREMENT, new rows take max(seq) + 1, so this never collides with a later insert.
                format!("(SELECT max(seq) FROM {d}) + 1"),
            ),
            Dialect::Postgres => (
                // The notification is delivered when the transaction commits, to every listener of the channel.
                format!("WITH ins AS ({insert} RETURNING 1) SELECT pg_notify($9, $1) WHERE EXISTS (SELECT 1 FROM ins)"),
                " FOR UPDATE SKIP LOCKED",
                "BEGIN",
                format!("nextval(pg_get_serial_sequence('{d}', 'seq'))"),
            ),
        };
        let claim = |extra: &str| {
            format!(
                "UPDATE {d} SET attempts = attempts + 1, visible_at = $3, lease = $4 WHERE seq IN (SELECT d.seq FROM \
                 {d} d WHERE d.sub = $1 AND d.state = {PENDING} AND d.visible_at <= $2{extra} ORDER BY d.seq LIMIT \
                 $5{lock}) RETURNING {CLAIMED}"
            )
        };
        let next_due = |extra: &str| {
            format!("SELECT min(d.visible_at) FROM {d} d WHERE d.sub = $1 AND d.state = {PENDING}{extra}")
        };
        Sql {
            dialect,
            begin,
            register: format!(
                "INSERT INTO {s} (topic, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET \
                 topic = excluded.topic RETURNING id"
            ),
            lookup: format!("SELECT id, topic FROM {s} WHERE name = $1"),
            publish,
            claim: claim(""),
            claim_ordered: claim(&head(d)),
            next_due: next_due(""),
            next_due_ordered: next_due(&head(d)),
            dead_letters: format!(
                "SELECT message_id, payload, attributes, ordering_key, publish_time, attempts, reason, dead_at FROM {d} \
                 WHERE sub = $1 AND state = {DEAD} ORDER BY seq LIMIT $2"
            ),
            dead_candidates: format!("SELECT seq, message_id FROM {d} WHERE sub = $1 AND state = {DEAD} ORDER BY seq"),
            renumber: format!(
                "UPDATE {d} SET seq = {renumber}, state = {PENDING}, attempts = 0, visible_at = $2, enqueued_at = $2, \
                 lease = NULL, reason = NULL, dead_at = NULL WHERE seq = $1 AND state = {DEAD}"
            ),
            backlog: format!("SELECT count(*) FROM {d} WHERE sub = $1 AND state = {PENDING}"),
            dead_depth: format!("SELECT count(*) FROM {d} WHERE sub = $1 AND state = {DEAD}"),
            sweep: format!(
                "DELETE FROM {d} WHERE sub = $1 AND ((state = {PENDING} AND visible_at <= $2 AND enqueued_at < $3) OR \
                 (state = {ACKED} AND visible_at < $2))"
            ),
            tables,
        }
    }

    /// `(seq, lease) IN (VALUES ($k, $k+1), ...)` for `n` pairs starting at placeholder `first`.
    fn pairs(n: usize, first: usize) -> String {
        let v: Vec<String> = (0..n).map(|i| format!("(${}, ${})", first + 2 * i, first + 2 * i + 1)).collect();
        format!("(seq, lease) IN (VALUES {})", v.join(", "))
    }

    /// Deletes `n` acked deliveries: binds (seq, lease) pairs from $1.
    pub fn ack_delete(&self, n: usize) -> String {
        format!("DELETE FROM {} WHERE {}", self.tables.deliveries, Self::pairs(n, 1))
    }

    /// Keeps `n` acked deliveries of an exactly-once topic for de-duplication, without their payload:
    /// $1 empty payload, $2 keep until, then pairs from $3.
    pub fn ack_keep(&self, n: usize) -> String {
        format!(
            "UPDATE {} SET state = {ACKED}, payload = $1, attributes = '', visible_at = $2, lease = NULL WHERE \
             state = {PENDING} AND {}",
            self.tables.deliveries,
            Self::pairs(n, 3)
        )
    }

    /// $1 new lease end, then pairs from $2.
    pub fn extend(&self, n: usize) -> String {
        format!(
            "UPDATE {} SET visible_at = $1 WHERE state = {PENDING} AND {}",
            self.tables.deliveries,
            Self::pairs(n, 2)
        )
    }

    /// Per item: $1 seq, $2 lease, $3 visible at.
    pub fn nack(&self) -> String {
        format!(
            "UPDATE {} SET visible_at = $3, lease = NULL WHERE seq = $1 AND lease = $2 AND state = {PENDING}",
            self.tables.deliveries
        )
    }

    /// Per item: $1 seq, $2 lease, $3 reason, $4 now.
    pub fn dead_letter(&self) -> String {
        format!(
            "UPDATE {} SET state = {DEAD}, reason = $3, dead_at = $4, lease = NULL WHERE seq = $1 AND lease = $2 AND \
             state = {PENDING}",
            self.tables.deliveries
        )
    }
}
