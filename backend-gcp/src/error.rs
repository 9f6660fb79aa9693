//! Mapping Google client errors to tidings errors with a retryable flag.

use google_cloud_pubsub::Error as GError;
use tidings_core::{Error, ErrorKind};

/// gRPC codes worth retrying.
fn retryable_code(code: &str) -> bool {
    matches!(code, "Unavailable" | "DeadlineExceeded" | "ResourceExhausted" | "Aborted" | "Internal" | "Unknown")
}

pub fn code(e: &GError) -> Option<String> {
    e.status().map(|s| format!("{:?}", s.code))
}

/// Converts an error of operation `op` on `resource`.
pub fn gcp(op: &str, resource: &str, e: GError) -> Error {
    let code = code(&e);
    let retryable = match &code {
        Some(c) => retryable_code(c),
        None => e.is_timeout() || e.is_io() || e.is_connect() || e.is_transport(),
    };
    let kind = match code.as_deref() {
        Some("NotFound") => ErrorKind::NotFound,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, format!("gcp: {op} on {resource} failed: {e}")).with_retryable(retryable).with_source(e)
}

pub fn is_already_exists(e: &GError) -> bool {
    code(e).as_deref() == Some("AlreadyExists")
}
