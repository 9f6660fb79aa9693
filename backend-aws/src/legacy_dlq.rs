//! The old dead-letter methods of the driver and admin traits (`SubscriptionDriver::{dead_letters, redrive}`,
//! `Admin::{dead_letters, redrive, purge}`) as thin calls into the one dead-letter surface, until the traits drop
//! them. Core no longer calls them on AWS (it sweeps through [`DeadLetters`]): each works on one read of the
//! dead-letter queue (at most 10 letters) and gives back what it did not move.

use tidings_core::backend::DeadLetters;
use tidings_core::dead_letter::{Pace, Select};
use tidings_core::{DeadLetter, MessageId, Result};

/// The letters of one read, given back at once.
pub(crate) async fn peek(q: &dyn DeadLetters, max: usize) -> Result<Vec<DeadLetter>> {
    let page = q.read(None, max).await?;
    let (held, letters): (Vec<_>, Vec<_>) = page.letters.into_iter().map(|h| (h.handle, h.letter)).unzip();
    if !held.is_empty() {
        q.release(held).await?;
    }
    Ok(letters)
}

/// The selected letters of one read, each after `pace` lets it go, restored (or deleted); returns how many moved.
pub(crate) async fn sweep(q: &dyn DeadLetters, select: Select<'_>, pace: &Pace, restore: bool) -> Result<u64> {
    let page = q.read(None, 10).await?;
    let (mut chosen, mut rest) = (Vec::new(), Vec::new());
    for h in page.letters {
        if select(&h.letter) && pace.wait().await {
            chosen.push(h);
        } else {
            rest.push(h.handle);
        }
    }
    let n = chosen.len() as u64;
    let moved =
        if restore { q.restore(chosen).await } else { q.delete(chosen.into_iter().map(|h| h.handle).collect()).await };
    let released = if rest.is_empty() { Ok(()) } else { q.release(rest).await };
    moved?;
    released?;
    (0..n).for_each(|_| pace.done());
    Ok(n)
}

/// The driver's redrive: the letters with these ids (all, without ids) among one read.
pub(crate) async fn redrive(q: &dyn DeadLetters, ids: Option<Vec<MessageId>>) -> Result<usize> {
    let select = |d: &DeadLetter| ids.as_ref().is_none_or(|ids| ids.contains(&d.id));
    Ok(sweep(q, &select, &Pace::unlimited(), true).await? as usize)
}
