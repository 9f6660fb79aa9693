//! The one error type of tidings: a kind, a message that names the value and the rule it broke, a retryable flag.

use std::fmt;

/// What went wrong, coarsely; match on it to decide what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A value broke a rule: a name, a duration, a retry policy, an attribute.
    InvalidInput,
    /// A message is larger than the backend accepts.
    MessageTooLarge,
    /// Configuration is missing a key, has a bad value, or names a backend that is not compiled in.
    Config,
    /// A topic or subscription was declared twice in a conflicting way.
    Conflict,
    /// A resource does not exist (and provisioning is not allowed to create it).
    NotFound,
    /// An existing resource's settings differ from what the code declares.
    Mismatch,
    /// The backend cannot do what was asked.
    Unsupported,
    /// The message could not be encoded or decoded.
    Codec,
    /// The backend failed (network, broker error, throttling...).
    Backend,
    /// The bus is shutting down or was shut down.
    Shutdown,
    /// A subscription's backlog reached its limit (`max_backlog`) and it refuses more (`when_full = "fail"`).
    BacklogFull,
}

/// The error type of every tidings operation.
///
/// `kind()` says what class of failure it is; `is_retryable()` says whether the same call may succeed later.
#[derive(thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        d.field("retryable", &self.retryable);
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new, non-retryable error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), retryable: false, source: None }
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// A backend failure; `retryable` tells the portable layer whether to try again.
    pub fn backend(message: impl Into<String>, retryable: bool) -> Self {
        Self::new(ErrorKind::Backend, message).with_retryable(retryable)
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Set whether the failed call may succeed if repeated.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// A copy for each of several messages one failed call concerned: kind, message and retryable flag, with the
    /// cause as text.
    pub(crate) fn duplicate(&self) -> Error {
        let mut e = Error::new(self.kind, self.message.clone()).with_retryable(self.retryable);
        if let Some(s) = &self.source {
            e.source = Some(s.to_string().into());
        }
        e
    }

    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether repeating the same call may succeed (a transient backend failure).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::new(ErrorKind::Codec, format!("JSON codec error: {e}")).with_source(e)
    }
}
