//! sqlx errors as tidings errors: connection trouble, pool timeouts, lock contention and serialization failures
//! are retryable; the rest are not.

use tidings_core::Error;

/// Wraps a database error, naming what failed.
pub(crate) fn db_error(what: &str, e: sqlx::Error) -> Error {
    let retryable = match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(d) => {
            // PostgreSQL: serialization failure, deadlock, admin shutdown, too many connections, cannot connect now;
            // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), with or without extended codes.
            let code = d.code().map(|c| c.to_string()).unwrap_or_default();
            matches!(code.as_str(), "40001" | "40P01" | "57P01" | "57P03" | "53300")
                || code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
        }
        _ => false,
    };
    Error::backend(format!("sql: {what} failed: {e}"), retryable).with_source(e)
}

/// A lease token naming one delivery: the row and the random lease written when it was claimed.
pub(crate) fn ack_id(seq: i64, lease: i64) -> tidings_core::backend::AckId {
    tidings_core::backend::AckId::Text(format!("{seq}:{lease}").into())
}

/// The (seq, lease) of a token this backend made; `None` for anything else.
pub(crate) fn parse_ack_id(id: &tidings_core::backend::AckId) -> Option<(i64, i64)> {
    match id {
        tidings_core::backend::AckId::Text(t) => {
            let (a, b) = t.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }
        tidings_core::backend::AckId::Num(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ack_ids_round_trip_and_foreign_ones_are_ignored() {
        let id = super::ack_id(42, -7);
        assert_eq!(super::parse_ack_id(&id), Some((42, -7)));
        assert_eq!(super::parse_ack_id(&tidings_core::backend::AckId::Num(1)), None);
        assert_eq!(super::parse_ack_id(&tidings_core::backend::AckId::Text("x".into())), None);
    }
}
