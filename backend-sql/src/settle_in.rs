//! Settling a delivery inside the application's own transaction (the transactional inbox's exact mode, crate
//! `tidings-inbox`): when a handler's transaction is on the bus's database, the delivery row it is handling is
//! acked by a statement of that transaction, so a commit and the ack are one event and a crash between them leaves
//! nothing to redeliver.
//!
//! A handler only knows its message's id, not the delivery row (`seq`) its subscription leased. Each subscription
//! driver of this process remembers, from claim to settlement, the rows it holds per message id ([`Held`]), in a
//! registry keyed by the subscription's resource name; [`ack_in`] looks there and settles those rows by primary
//! key on the caller's connection. The runtime's own ack comes later and finds nothing left to settle: acking a row
//! that is gone changes nothing (its statements match on `seq`, the lease and `state = 0`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use tidings_core::backend::{AckId, ReceivedMessage};
use tidings_core::{Bus, MessageId, Result};

use crate::error::parse_ack_id;
use crate::publish_in::InTransaction;

/// The rows one subscription driver of this process holds: leased by a claim and not yet settled by it.
#[derive(Debug)]
pub(crate) struct Held {
    /// The subscription keeps acked rows for de-duplication (exactly-once topic) for its retention.
    pub dedup: bool,
    pub retention: Duration,
    rows: Mutex<Rows>,
}

#[derive(Debug, Default)]
struct Rows {
    by_id: HashMap<MessageId, Vec<i64>>,
    by_seq: HashMap<i64, MessageId>,
}

/// Registered drivers per subscription resource name (several buses of one process may hold the same name).
static REGISTRY: LazyLock<Mutex<HashMap<String, Vec<Weak<Held>>>>> = LazyLock::new(Mutex::default);

impl Held {
    /// The record of a new subscription driver, registered under its resource name.
    pub fn register(resource: &str, dedup: bool, retention: Duration) -> Arc<Held> {
        let held = Arc::new(Held { dedup, retention, rows: Mutex::default() });
        let mut reg = REGISTRY.lock().unwrap();
        let list = reg.entry(resource.to_string()).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&held));
        held
    }

    /// Remembers the rows a claim leased.
    pub fn claimed(&self, got: &[ReceivedMessage]) {
        if got.is_empty() {
            return;
        }
        let mut rows = self.rows.lock().unwrap();
        for m in got {
            if let Some((seq, _)) = parse_ack_id(&m.ack_id) {
                let seqs = rows.by_id.entry(m.id.clone()).or_default();
                if !seqs.contains(&seq) {
                    seqs.push(seq);
                }
                rows.by_seq.insert(seq, m.id.clone());
            }
        }
    }

    /// Forgets rows the runtime settled (acked, nacked or dead-lettered).
    pub fn settled<'a>(&self, ids: impl IntoIterator<Item = &'a AckId>) {
        let mut rows = self.rows.lock().unwrap();
        for id in ids {
            let Some((seq, _)) = parse_ack_id(id) else { continue };
            let Some(message) = rows.by_seq.remove(&seq) else { continue };
            if let Some(seqs) = rows.by_id.get_mut(&message) {
                seqs.retain(|s| *s != seq);
                if seqs.is_empty() {
                    rows.by_id.remove(&message);
                }
            }
        }
    }

    fn seqs(&self, id: &MessageId) -> Vec<i64> {
        self.rows.lock().unwrap().by_id.get(id).cloned().unwrap_or_default()
    }
}

/// The rows of message `id` that this process's drivers of `subscription` hold, and how an ack settles them.
fn held(subscription: &str, id: &MessageId) -> (Vec<i64>, Option<Duration>) {
    let reg = REGISTRY.lock().unwrap();
    let mut seqs = Vec::new();
    let mut keep = None;
    for held in reg.get(subscription).into_iter().flatten().filter_map(Weak::upgrade) {
        let found = held.seqs(id);
        if !found.is_empty() && held.dedup {
            keep = Some(held.retention);
        }
        seqs.extend(found);
    }
    seqs.sort_unstable();
    seqs.dedup();
    (seqs, keep)
}

/// Acks, inside the transaction `tx` is in (pass `&mut *tx`), the delivery of message `id` that this process holds
/// for the subscription whose resource name is `subscription` (`Bus::subscription_spec(..).resource`): the row is
/// deleted (or, on an exactly-once topic, kept without its payload for de-duplication, as an ack does) when the
/// transaction commits, and stays leased if it rolls back. Returns how many rows it settled: 0 when this
/// connection's database is not the bus's, when the bus is not a SQL one, or when the delivery was settled already.
///
/// The runtime acks the delivery again once the handler returns; that second ack finds nothing to do. Call it only
/// on a connection whose database holds the bus's tables ([`holds_bus_tables`]): on PostgreSQL a statement naming a
/// missing table aborts the transaction. This is the building block of `tidings-inbox`'s exact mode; applications
/// use the inbox.
pub async fn ack_in<C: InTransaction + ?Sized>(
    bus: &Bus,
    tx: &mut C,
    subscription: &str,
    id: &MessageId,
) -> Result<u64> {
    if bus.backend_name() != tx.backend_name() {
        return Ok(0);
    }
    let (seqs, keep) = held(subscription, id);
    if seqs.is_empty() {
        return Ok(0);
    }
    let now = tidings_core::backend::time::micros(std::time::SystemTime::now());
    let keep_until = keep.map(|r| now.saturating_add(r.as_micros().min(i64::MAX as u128) as i64));
    tx.settle_rows(bus, subscription, id.as_str(), &seqs, keep_until).await
}

/// Whether the database of this connection holds the bus's delivery tables and the grants [`ack_in`] needs (DELETE
/// and UPDATE on the deliveries, SELECT on the subscriptions): the bus is a SQL one on this database, or on another
/// one that has tidings tables (then [`ack_in`] settles nothing). `false` for a bus of another backend or dialect.
pub async fn holds_bus_tables<C: InTransaction + ?Sized>(bus: &Bus, conn: &mut C) -> Result<bool> {
    if bus.backend_name() != conn.backend_name() {
        return Ok(false);
    }
    conn.has_bus_tables(bus).await
}

/// The statement settling `n` held rows of one message: $1 the subscription's resource name, $2 the message id, the
/// rows' `seq` from $3; with `keep`, then the empty payload and the time to keep them until.
pub(crate) fn statement(sql: &crate::sql::Sql, n: usize, keep: bool) -> String {
    use crate::schema::{ACKED, PENDING};
    let (s, d) = (&sql.tables.subs, &sql.tables.deliveries);
    let seqs: Vec<String> = (0..n).map(|i| format!("${}", i + 3)).collect();
    let rows = format!(
        "seq IN ({}) AND message_id = $2 AND state = {PENDING} AND sub IN (SELECT id FROM {s} WHERE name = $1)",
        seqs.join(", ")
    );
    if keep {
        format!(
            "UPDATE {d} SET state = {ACKED}, payload = ${}, attributes = '', visible_at = ${}, lease = NULL WHERE {rows}",
            n + 3,
            n + 4
        )
    } else {
        format!("DELETE FROM {d} WHERE {rows}")
    }
}

/// Runs [`statement`] on `conn`.
macro_rules! settle_on {
    ($conn:expr, $sql:expr, $subscription:expr, $id:expr, $seqs:expr, $keep_until:expr) => {{
        let statement = $crate::settle_in::statement($sql, $seqs.len(), $keep_until.is_some());
        let mut q = sqlx::query(&statement).bind($subscription).bind($id);
        for seq in $seqs {
            q = q.bind(*seq);
        }
        if let Some(until) = $keep_until {
            q = q.bind(Vec::<u8>::new()).bind(until);
        }
        let done = q.execute($conn).await.map_err(|e| $crate::error::db_error("acking in the transaction", e))?;
        Ok(done.rows_affected())
    }};
}

pub(crate) use settle_on;

#[cfg(test)]
mod tests {
    use super::*;

    fn received(seq: i64, lease: i64, id: &str) -> ReceivedMessage {
        ReceivedMessage::new(
            crate::error::ack_id(seq, lease),
            MessageId::from(id),
            bytes::Bytes::new(),
            std::time::SystemTime::now(),
            1,
        )
    }

    /// A driver's rows are found by message id from claim to settlement, across the drivers of one resource name,
    /// and forgotten once settled; a dropped driver leaves nothing behind.
    #[test]
    fn held_rows_are_found_by_message_id_until_settled() {
        let name = format!("held-test-{}", uuid::Uuid::new_v4());
        let a = Held::register(&name, false, Duration::from_secs(60));
        let b = Held::register(&name, true, Duration::from_secs(60));
        a.claimed(&[received(1, 10, "m1"), received(2, 11, "m2")]);
        b.claimed(&[received(7, 12, "m1")]);
        assert_eq!(held(&name, &"m1".into()), (vec![1, 7], Some(Duration::from_secs(60))));
        assert_eq!(held(&name, &"m2".into()), (vec![2], None));
        a.settled([&crate::error::ack_id(1, 10)]);
        assert_eq!(held(&name, &"m1".into()).0, vec![7]);
        drop(b);
        assert_eq!(held(&name, &"m1".into()).0, Vec::<i64>::new());
        assert_eq!(held("another-name", &"m2".into()).0, Vec::<i64>::new());
        a.settled([&crate::error::ack_id(2, 11), &AckId::Num(3)]);
        assert!(a.rows.lock().unwrap().by_seq.is_empty() && a.rows.lock().unwrap().by_id.is_empty());
    }
}
