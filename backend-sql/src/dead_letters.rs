//! A subscription's dead-letter queue on the SQL tables: its rows in the dead state, with their reason, read in `seq`
//! order. A restore turns dead rows back into pending ones, in one transaction: a row is dead-lettered or pending
//! again, never neither and never both, and it keeps what it carried (payload, attributes and trace context, ordering
//! key, publish time, id), with a new `seq` that puts it behind what is pending and its attempts counted from zero.
//! A delete removes dead rows. Nothing is leased by a read, so there is nothing to release.
//!
//! A cursor is `<last seq read>/<highest seq when the pass began>`: a pass meets only the rows dead when it began,
//! so a row restored and dead-lettered again meanwhile (under a higher `seq`) is not met twice.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use tidings_core::backend::time::micros;
use tidings_core::backend::AckId;
use tidings_core::dead_letter::{DeadLetters, HeldLetter, LetterPage};
use tidings_core::{Error, Result};

use crate::store::Store;
use crate::wake::Wake;

/// The dead-letter queue of one subscription (of the `Subscription` handle's driver or of the operator's).
#[derive(Debug)]
pub(crate) struct SqlDeadLetters {
    pub store: Arc<dyn Store>,
    pub wake: Arc<Wake>,
    pub topic: String,
    pub sub: i64,
}

impl SqlDeadLetters {
    /// Moves these dead rows back into the subscription and wakes its receivers (in every process); returns how many
    /// were still dead.
    pub async fn restore_rows(&self, letters: &[HeldLetter]) -> Result<u64> {
        let seqs = seqs(letters.iter().map(|h| &h.handle))?;
        let moved = self.store.restore(self.sub, &seqs, micros(SystemTime::now())).await?;
        if moved > 0 {
            self.wake.notify(&self.topic);
            self.store.signal(&self.topic).await?;
        }
        Ok(moved)
    }
}

/// The `seq` of each handle a read gave out.
fn seqs<'a>(handles: impl Iterator<Item = &'a AckId>) -> Result<Vec<i64>> {
    handles
        .map(|h| match h {
            AckId::Num(n) if *n <= i64::MAX as u64 => Ok(*n as i64),
            other => Err(Error::invalid(format!(
                "sql: dead-letter handle {other:?} is not one this backend gave out (the row number of a dead letter)"
            ))),
        })
        .collect()
}

/// The (last seq read, highest seq of the pass) of a cursor this queue gave out.
fn parse_cursor(cursor: &str) -> Result<(i64, i64)> {
    let parsed = cursor.split_once('/').and_then(|(after, upto)| Some((after.parse().ok()?, upto.parse().ok()?)));
    parsed.ok_or_else(|| {
        Error::invalid(format!(
            "sql: dead-letter cursor {cursor:?} is not one this backend gave out (<last seq read>/<highest seq>)"
        ))
    })
}

#[async_trait]
impl DeadLetters for SqlDeadLetters {
    async fn read(&self, cursor: Option<&str>, max: usize) -> Result<LetterPage> {
        let (after, upto) = match cursor {
            Some(c) => parse_cursor(c)?,
            None => (0, self.store.high_water().await?),
        };
        // One row more than asked tells whether the pass goes on.
        let mut letters = self.store.dead_page(self.sub, after, upto, max.saturating_add(1)).await?;
        let more = letters.len() > max;
        letters.truncate(max);
        let next = match letters.last() {
            Some(HeldLetter { handle: AckId::Num(last), .. }) if more => Some(format!("{last}/{upto}")),
            _ => None,
        };
        Ok(LetterPage::new(letters, next))
    }

    async fn restore(&self, letters: Vec<HeldLetter>) -> Result<()> {
        self.restore_rows(&letters).await.map(drop)
    }

    async fn delete(&self, handles: Vec<AckId>) -> Result<()> {
        self.store.delete_dead(self.sub, &seqs(handles.iter())?).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_and_handles_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(parse_cursor("41/900").unwrap(), (41, 900));
        for bad in ["", "41", "41/", "x/900", "41:900"] {
            let e = parse_cursor(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "names the cursor: {e}");
        }
        assert_eq!(seqs([AckId::Num(7), AckId::Num(9)].iter()).unwrap(), vec![7, 9]);
        let e = seqs([AckId::Text("7:1".into())].iter()).unwrap_err().to_string();
        assert!(e.contains("7:1") && e.contains("row number"), "names the handle and the rule: {e}");
        assert!(seqs([AckId::Num(u64::MAX)].iter()).is_err(), "beyond any seq");
    }
}
