//! Expired rows are deleted in bounded statements, by a task that runs while a subscription of the inbox runs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tidings_core::Result;

use crate::dialect::{InboxDatabase, Statements};

/// The sweep task of one inbox; dropping the last handle (the last subscription's handler is dropped when the bus
/// or the subscription shuts down) stops it.
pub(crate) struct Sweeper {
    task: tokio::task::AbortHandle,
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sweeper {
    pub fn start<DB: InboxDatabase>(pool: sqlx::Pool<DB>, st: Statements, every: Duration, batch: usize) -> Arc<Self> {
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = sweep_all::<DB>(&pool, &st, batch).await {
                    tracing::warn!(target: "tidings", table = %st.table, error = %e, "inbox sweep failed; trying again later");
                }
            }
        });
        Arc::new(Sweeper { task: task.abort_handle() })
    }
}

/// Deletes the rows expired now, `batch` at most per statement, until a statement deletes fewer.
pub(crate) async fn sweep_all<DB: InboxDatabase>(pool: &sqlx::Pool<DB>, st: &Statements, batch: usize) -> Result<u64> {
    let now = tidings_core::backend::time::micros(SystemTime::now());
    let counter = metrics::counter!(crate::SWEPT, "table" => st.table.clone());
    let mut total = 0;
    loop {
        let n = DB::sweep_batch(pool, st, now, batch as i64)
            .await
            .map_err(|e| crate::db_error("sweeping expired inbox rows", e))?;
        total += n;
        counter.increment(n);
        if n < batch as u64 {
            break;
        }
        // Other work on the table goes between two statements.
        tokio::task::yield_now().await;
    }
    if total > 0 {
        tracing::debug!(target: "tidings", table = %st.table, swept = total, "expired inbox rows deleted");
    }
    Ok(total)
}
