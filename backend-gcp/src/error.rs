//! Mapping Google client errors to tidings errors with a retryable flag.

use google_cloud_pubsub::error::PublishError;
use google_cloud_pubsub::Error as GError;
use tidings_core::cloud::Provisioning;
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

/// Converts a failed publish to `topic`. A missing topic is not retryable, and the error says who should have created
/// it; other RPC failures are retryable by their gRPC code.
pub fn publish(topic: &str, provisioning: Provisioning, e: &PublishError) -> Error {
    let PublishError::Rpc(inner) = e else {
        return Error::backend(format!("gcp: publish to {topic} failed: {e}"), true);
    };
    let code = code(inner);
    if code.as_deref() == Some("NotFound") {
        let who = match provisioning {
            Provisioning::Auto => "it was deleted after tidings created it",
            _ => "gcp.provisioning is not `auto`, so tidings does not create it: create it first",
        };
        return Error::new(
            ErrorKind::NotFound,
            format!("gcp: publish to {topic} failed: the topic does not exist ({who})"),
        );
    }
    let retryable = code.as_deref().is_none_or(retryable_code);
    Error::backend(format!("gcp: publish to {topic} failed: {e}"), retryable)
}
