//! The statements, built once per backend from the table names. Placeholders are `$N`, which both PostgreSQL and
//! SQLite read; the dialects differ only where noted (`FOR UPDATE SKIP LOCKED`, `pg_notify`, renumbering).

use crate::schema::{Tables, ACKED, DEAD, PENDING};

/// Columns a claim returns.
pub(crate) const CLAIMED: &str = "seq, message_id, payload, attributes, ordering_key, publish_time, attempts";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
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
    pub claim: String,
    pub claim_ordered: String,
    pub next_due: String,
    pub next_due_ordered: String,
    pub dead_page: String,
    pub renumber: String,
    pub backlog: String,
    /// The backlog and, of it, the rows still scheduled at `$2` (now): [`scheduled`] and not yet due.
    pub backlog_detail: String,
    pub dead_depth: String,
    pub sweep: String,
}

/// A row published with a due time and never claimed: `visible_at` past its `enqueued_at` while no attempt was made.
/// (A row waiting out a retry backoff, or leased, has had an attempt; a redriven row is visible from its
/// `enqueued_at`.)
pub(crate) fn scheduled(t: &str) -> String {
    format!("({t}.attempts = 0 AND {t}.visible_at > {t}.enqueued_at)")
}

/// Only the oldest pending delivery of an ordering key may be claimed (head-of-line blocking across processes). A
/// scheduled row not yet due (`$2` is now) holds no place in its key: it takes one when due.
fn head(d: &str) -> String {
    format!(
        " AND (d.ordering_key IS NULL OR d.seq = (SELECT min(h.seq) FROM {d} h WHERE h.sub = d.sub AND h.state = \
         {PENDING} AND h.ordering_key IS NOT NULL AND h.ordering_key = d.ordering_key AND NOT ({} AND h.visible_at > \
         $2)))",
        scheduled("h")
    )
}

/// [`head`] for the next-due query (no `$2`): the key heads among rows that are not scheduled, and every scheduled
/// row (at its due time).
fn head_or_scheduled(d: &str) -> String {
    format!(
        " AND (d.ordering_key IS NULL OR {} OR d.seq = (SELECT min(h.seq) FROM {d} h WHERE h.sub = d.sub AND h.state = \
         {PENDING} AND h.ordering_key IS NOT NULL AND h.ordering_key = d.ordering_key AND NOT {}))",
        scheduled("d"),
        scheduled("h")
    )
}

impl Sql {
    pub fn new(dialect: Dialect, tables: Tables) -> Self {
        let (s, d) = (&tables.subs, &tables.deliveries);
        let (lock, begin, renumber) = match dialect {
            Dialect::Sqlite => (
                "",
                "BEGIN IMMEDIATE",
                // Without AUTOINCREMENT, new rows take max(seq) + 1, so this never collides with a later insert.
                format!("(SELECT max(seq) FROM {d}) + 1"),
            ),
            Dialect::Postgres => {
                (" FOR UPDATE SKIP LOCKED", "BEGIN", format!("nextval(pg_get_serial_sequence('{d}', 'seq'))"))
            }
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
            claim: claim(""),
            claim_ordered: claim(&head(d)),
            next_due: next_due(""),
            next_due_ordered: next_due(&head_or_scheduled(d)),
            dead_page: format!(
                "SELECT seq, message_id, payload, attributes, ordering_key, publish_time, attempts, reason, dead_at \
                 FROM {d} WHERE sub = $1 AND state = {DEAD} AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4"
            ),
            // The row itself goes back (payload, attributes with their trace context, ordering key, publish time and
            // id as stored), its attempts counted from zero again.
            renumber: format!(
                "UPDATE {d} SET seq = {renumber}, state = {PENDING}, attempts = 0, visible_at = $2, enqueued_at = $2, \
                 lease = NULL, reason = NULL, dead_at = NULL WHERE seq = $1 AND sub = $3 AND state = {DEAD}"
            ),
            backlog: format!("SELECT count(*) FROM {d} WHERE sub = $1 AND state = {PENDING}"),
            backlog_detail: format!(
                "SELECT count(*), count(*) FILTER (WHERE {} AND d.visible_at > $2) FROM {d} d WHERE d.sub = $1 AND \
                 d.state = {PENDING}",
                scheduled("d")
            ),
            dead_depth: format!("SELECT count(*) FROM {d} WHERE sub = $1 AND state = {DEAD}"),
            sweep: format!(
                "DELETE FROM {d} WHERE sub = $1 AND ((state = {PENDING} AND visible_at <= $2 AND enqueued_at < $3) OR \
                 (state = {ACKED} AND visible_at < $2))"
            ),
            tables,
        }
    }

    /// Writes `n` messages, one delivery per subscription of the topic each, in one statement: $1 topic, $2 now,
    /// $3 dedup (PostgreSQL: $4 NOTIFY channel), then per message (id, payload, attributes, ordering key, publish
    /// time, visible at: now, or its due time) from [`Sql::publish_first`]. Deliveries are numbered in the batch's order.
    pub fn publish(&self, n: usize) -> String {
        let (s, d) = (&self.tables.subs, &self.tables.deliveries);
        let first = self.publish_first();
        let v: Vec<String> = (0..n)
            .map(|i| {
                let k = first + 6 * i;
                format!("({i}, ${k}, ${}, ${}, ${}, ${}, ${})", k + 1, k + 2, k + 3, k + 4, k + 5)
            })
            .collect();
        let values = format!(
            "WITH v (n, message_id, payload, attributes, ordering_key, publish_time, visible_at) AS (VALUES {})",
            v.join(", ")
        );
        // The WHERE keeps SQLite from reading ON CONFLICT as a join constraint.
        let insert = format!(
            "INSERT INTO {d} (sub, message_id, payload, attributes, ordering_key, publish_time, enqueued_at, \
             visible_at, dedup) SELECT s.id, v.message_id, v.payload, v.attributes, v.ordering_key, v.publish_time, \
             $2, v.visible_at, $3 FROM {s} s, v WHERE s.topic = $1 ORDER BY v.n, s.id ON CONFLICT (sub, message_id) WHERE \
             dedup DO NOTHING"
        );
        match self.dialect {
            Dialect::Sqlite => format!("{values} {insert}"),
            // The notification is delivered when the transaction commits, to every listener of the channel.
            Dialect::Postgres => format!(
                "{values}, ins AS ({insert} RETURNING 1) SELECT pg_notify($4, $1) WHERE EXISTS (SELECT 1 FROM ins)"
            ),
        }
    }

    /// The first placeholder of the messages in [`Sql::publish`].
    pub fn publish_first(&self) -> usize {
        match self.dialect {
            Dialect::Sqlite => 4,
            Dialect::Postgres => 5,
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

    /// Deletes `n` dead deliveries of a subscription: $1 the subscription, then their `seq` from $2.
    pub fn delete_dead(&self, n: usize) -> String {
        let v: Vec<String> = (0..n).map(|i| format!("${}", i + 2)).collect();
        format!(
            "DELETE FROM {} WHERE sub = $1 AND state = {DEAD} AND seq IN ({})",
            self.tables.deliveries,
            v.join(", ")
        )
    }

    /// `WITH v (seq, lease, x) AS (VALUES ($k, $k+1, $k+2), ...)` for `n` triples starting at placeholder `first`,
    /// `x` of SQL type `x_type`. The casts give PostgreSQL the types of placeholders it cannot infer inside VALUES;
    /// SQLite reads them as affinities.
    fn triples(n: usize, first: usize, x_type: &str) -> String {
        let v: Vec<String> = (0..n)
            .map(|i| {
                let k = first + 3 * i;
                format!("(CAST(${k} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS {x_type}))", k + 1, k + 2)
            })
            .collect();
        format!("WITH v (seq, lease, x) AS (VALUES {}) ", v.join(", "))
    }

    /// Makes `n` leased deliveries visible again, each at its own time, in one statement: binds (seq, lease,
    /// visible at) triples from $1.
    pub fn nack(&self, n: usize) -> String {
        format!(
            "{}UPDATE {} AS t SET visible_at = v.x, lease = NULL FROM v WHERE t.seq = v.seq AND t.lease = v.lease AND \
             t.state = {PENDING}",
            Self::triples(n, 1, "BIGINT"),
            self.tables.deliveries
        )
    }

    /// Dead-letters `n` leased deliveries, each with its reason, in one statement: $1 now, then (seq, lease,
    /// reason) triples from $2.
    pub fn dead_letter(&self, n: usize) -> String {
        format!(
            "{}UPDATE {} AS t SET state = {DEAD}, reason = v.x, dead_at = $1, lease = NULL FROM v WHERE t.seq = v.seq \
             AND t.lease = v.lease AND t.state = {PENDING}",
            Self::triples(n, 2, "TEXT"),
            self.tables.deliveries
        )
    }
}
