//! Dead letters: messages that left a subscription after exhausting retries, failing to decode, or an
//! unrecoverable error, kept with the reason so they can be read, redriven and purged.
//!
//! A backend offers its dead-letter queue through one surface, [`DeadLetters`]; the `Subscription` handle and the
//! operator (the CLI, the dashboard) both go through the sweep here, which reads the queue page by page, selects
//! letters, paces the moves and releases what it held.

mod pace;
mod sweep;

pub use crate::backend::dead_letters::{DeadLetter, DeadLetters, HeldLetter, LetterPage};
pub use pace::Pace;
pub use sweep::peek;
pub(crate) use sweep::{sweep, Move};

/// Chooses dead letters (by id, by reason, everything).
pub type Select<'a> = &'a (dyn Fn(&DeadLetter) -> bool + Send + Sync);
