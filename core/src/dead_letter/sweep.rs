//! The one loop over a dead-letter queue: read page by page, select, pace, move (restore or delete), and give back
//! what was held. Written once for every backend. Each call to the queue that fails retryably is retried with backoff
//! ([`retry::call`]): a transient error costs a retry of that one step, not the whole sweep (except a restore of
//! several letters, which may have moved some of them before it failed).

use std::collections::HashSet;
use std::time::Duration;

use super::{DeadLetter, DeadLetters, HeldLetter, Pace, Select};
use crate::backend::AckId;
use crate::error::Result;
use crate::retry;

/// Letters per read when the pace is quick; a pace slower than one a second reads one at a time, so no letter a read
/// holds waits past its lease.
const PER_READ: usize = 100;

/// What a sweep does with each selected letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// Back into the subscription (a redrive).
    Restore,
    /// Gone for good (a purge).
    Delete,
}

/// Up to `max` dead letters of a queue, oldest first, without removing any (what `Subscription::dead_letters` and the
/// operator read): pages through it and releases what it held.
pub async fn peek(q: &dyn DeadLetters, max: usize) -> Result<Vec<DeadLetter>> {
    let mut out = Vec::new();
    let mut held = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let read = async {
        while out.len() < max {
            let n = (max - out.len()).min(PER_READ);
            let page = retry::call("read dead letters", None, || q.read(cursor.as_deref(), n)).await?;
            if page.letters.is_empty() {
                break;
            }
            let mut progress = false;
            for h in page.letters {
                held.push(h.handle);
                if seen.insert(h.letter.id.clone()) && out.len() < max {
                    progress = true;
                    out.push(h.letter);
                }
            }
            match page.next {
                Some(next) if progress => cursor = Some(next),
                _ => break,
            }
        }
        Ok::<_, crate::Error>(())
    }
    .await;
    let released = release(q, held).await;
    read?;
    released?;
    out.sort_by_key(|d| d.dead_lettered_at);
    Ok(out)
}

/// Reads the queue through once, moving each selected letter after `pace` lets it go; returns how many moved. What
/// it read and did not move is released at the end, also when a move fails or the pace stops it.
pub(crate) async fn sweep(q: &dyn DeadLetters, select: Select<'_>, pace: &Pace, how: Move) -> Result<u64> {
    let one_by_one = pace.interval().is_some();
    let per_read = if pace.interval().is_some_and(|i| i > Duration::from_secs(1)) { 1 } else { PER_READ };
    let mut held = Vec::new();
    let mut done = 0;
    let result = pass(q, select, pace, how, one_by_one, per_read, &mut held, &mut done).await;
    let released = release(q, held).await;
    result?;
    released?;
    Ok(done)
}

#[allow(clippy::too_many_arguments)]
async fn pass(
    q: &dyn DeadLetters,
    select: Select<'_>,
    pace: &Pace,
    how: Move,
    one_by_one: bool,
    per_read: usize,
    held: &mut Vec<AckId>,
    done: &mut u64,
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = retry::call("read dead letters", None, || q.read(cursor.as_deref(), per_read)).await?;
        if page.letters.is_empty() {
            return Ok(());
        }
        let mut progress = false;
        let mut group = Vec::new();
        let mut letters = page.letters.into_iter();
        while let Some(h) = letters.next() {
            progress |= seen.insert(h.letter.id.clone());
            if !select(&h.letter) {
                held.push(h.handle);
                continue;
            }
            if !pace.wait().await {
                held.push(h.handle);
                held.extend(letters.map(|h| h.handle));
                *done += apply(q, how, group, pace).await?;
                return Ok(());
            }
            group.push(h);
            if one_by_one {
                *done += apply(q, how, std::mem::take(&mut group), pace).await?;
            }
        }
        *done += apply(q, how, group, pace).await?;
        match page.next {
            Some(next) if progress => cursor = Some(next),
            _ => return Ok(()),
        }
    }
}

/// Moves a group of letters in one call and counts them on the pace.
async fn apply(q: &dyn DeadLetters, how: Move, group: Vec<HeldLetter>, pace: &Pace) -> Result<u64> {
    if group.is_empty() {
        return Ok(0);
    }
    let n = group.len();
    match how {
        // A restore of one letter is tried again (at worst its copy went and its dead letter stays: in both). A failed
        // restore of several may have moved some of them already: repeating it would restore those twice.
        Move::Restore if n == 1 => retry::call("restore a dead letter", None, || q.restore(group.clone())).await?,
        Move::Restore => q.restore(group).await?,
        Move::Delete => {
            let handles: Vec<AckId> = group.into_iter().map(|h| h.handle).collect();
            retry::call("delete dead letters", None, || q.delete(handles.clone())).await?
        }
    }
    for _ in 0..n {
        pace.done();
    }
    Ok(n as u64)
}

async fn release(q: &dyn DeadLetters, held: Vec<AckId>) -> Result<()> {
    if held.is_empty() {
        return Ok(());
    }
    retry::call("release dead letters", None, || q.release(held.clone())).await
}

#[cfg(test)]
mod tests;
