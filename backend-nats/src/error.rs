//! Mapping async-nats errors to tidings errors with a retryable flag.

use async_nats::jetstream::ErrorCode;
use tidings_core::{Error, ErrorKind};

/// A failed operation `op` on `resource`; `retryable` when the cause is the network or the server's load.
pub fn nats(op: &str, resource: &str, e: impl std::fmt::Display, retryable: bool) -> Error {
    Error::backend(format!("nats: {op} on {resource} failed: {e}"), retryable)
}

/// An error answer of the JetStream API.
pub fn api(op: &str, resource: &str, e: &async_nats::jetstream::Error) -> Error {
    let code = e.error_code();
    let kind = if code == ErrorCode::STREAM_NOT_FOUND || code == ErrorCode::CONSUMER_NOT_FOUND {
        ErrorKind::NotFound
    } else {
        ErrorKind::Backend
    };
    // 5xx-style answers (cluster leaderless, storage busy) pass; 4xx ones (bad config, missing resource) do not.
    let retryable = e.code() >= 500;
    Error::new(kind, format!("nats: {op} on {resource} failed: {e} (JetStream error {})", code.0))
        .with_retryable(retryable)
}

/// Whether a JetStream API error says the resource does not exist.
pub fn is_not_found(e: &async_nats::jetstream::Error) -> bool {
    let code = e.error_code();
    code == ErrorCode::STREAM_NOT_FOUND || code == ErrorCode::CONSUMER_NOT_FOUND || e.code() == 404
}
