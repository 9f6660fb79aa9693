//! Subscription handlers and their errors.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::message::Message;

/// Why a handler failed. Any `std::error::Error` converts into it with `?` (a retryable failure);
/// [`HandlerError::unrecoverable`] sends the message straight to the dead-letter queue.
pub struct HandlerError {
    message: String,
    unrecoverable: bool,
}

impl HandlerError {
    /// A failure that retrying may fix: the message is redelivered after the backoff.
    pub fn retry(reason: impl fmt::Display) -> Self {
        Self { message: reason.to_string(), unrecoverable: false }
    }
    /// A failure that retrying cannot fix: the message is dead-lettered at once.
    pub fn unrecoverable(reason: impl fmt::Display) -> Self {
        Self { message: reason.to_string(), unrecoverable: true }
    }
    /// Whether this error dead-letters at once.
    pub fn is_unrecoverable(&self) -> bool {
        self.unrecoverable
    }
    /// The reason, as recorded in the dead-letter queue.
    pub fn reason(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message)
            .field("unrecoverable", &self.unrecoverable)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        Self::retry(e)
    }
}

/// What a handler returns: `Ok` acks, `Err` nacks (or dead-letters, for an unrecoverable error).
pub type HandlerResult = Result<(), HandlerError>;

/// Boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;

/// An async message handler. Implemented for every `Fn(Message<T>) -> impl Future<Output = HandlerResult>`.
pub trait Handler<T>: Send + Sync + 'static {
    /// Handles one delivery.
    fn call(&self, message: Message<T>) -> HandlerFuture;
}

impl<T, F, Fut> Handler<T> for F
where
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, message: Message<T>) -> HandlerFuture {
        Box::pin(self(message))
    }
}

/// What a batch handler decided for its batch: every message acked, or one result per message.
///
/// A batch handler returns `Result<BatchOutcome, HandlerError>`: `Err(e)` (what `?` gives) fails every message of the
/// batch with `e` (retried, or dead-lettered at once when [`HandlerError::unrecoverable`]). Each message is then
/// settled on its own, exactly as a single handler's message is.
#[derive(Debug)]
pub enum BatchOutcome {
    /// Every message of the batch is acked.
    AckAll,
    /// One result per message, in the order of the batch: `Ok(())` acks it, [`HandlerError::retry`] retries it after
    /// its backoff, [`HandlerError::unrecoverable`] dead-letters it at once. Fewer or more results than messages is a
    /// failure of the whole batch: every message is retried (none is acked).
    Each(Vec<HandlerResult>),
}

impl From<Vec<HandlerResult>> for BatchOutcome {
    fn from(results: Vec<HandlerResult>) -> Self {
        Self::Each(results)
    }
}

impl FromIterator<HandlerResult> for BatchOutcome {
    /// One result per message, in the order of the batch ([`BatchOutcome::Each`]).
    fn from_iter<I: IntoIterator<Item = HandlerResult>>(results: I) -> Self {
        Self::Each(results.into_iter().collect())
    }
}

/// What a batch handler returns: see [`BatchOutcome`].
pub type BatchResult = Result<BatchOutcome, HandlerError>;

/// Boxed batch handler future.
pub type BatchFuture = Pin<Box<dyn Future<Output = BatchResult> + Send + 'static>>;

/// An async handler of a batch of messages ([`crate::Bus::subscribe_batch`]). Implemented for every
/// `Fn(Vec<Message<T>>) -> impl Future<Output = BatchResult>`.
pub trait BatchHandler<T>: Send + Sync + 'static {
    /// Handles one batch: at least one message, at most the subscription's `max_messages`, in the order they were
    /// received (on an ordered topic, a key's messages in publish order).
    fn call(&self, batch: Vec<Message<T>>) -> BatchFuture;
}

impl<T, F, Fut> BatchHandler<T> for F
where
    F: Fn(Vec<Message<T>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = BatchResult> + Send + 'static,
{
    fn call(&self, batch: Vec<Message<T>>) -> BatchFuture {
        Box::pin(self(batch))
    }
}
