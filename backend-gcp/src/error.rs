//! Mapping Google client errors to tidings errors with a retryable flag.

use google_cloud_pubsub::Error as GError;
use tidings_core::backend::cloud::Provisioning;
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

/// Converts a non-success answer of the REST API to `what`, retryable by the status Google's error body names (the
/// gRPC code's name, as [`retryable_code`] lists them), or else by the HTTP status (5xx, 429).
pub fn http(what: &str, status: u16, body: &str) -> Error {
    let named = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/status").and_then(|s| s.as_str()).map(str::to_string));
    let retryable = match named.as_deref() {
        Some(s) => retryable_code(&grpc_name(s)),
        None => status >= 500 || status == 429,
    };
    let kind =
        if status == 404 || named.as_deref() == Some("NOT_FOUND") { ErrorKind::NotFound } else { ErrorKind::Backend };
    Error::new(kind, format!("gcp: {what} failed: HTTP {status}: {body}")).with_retryable(retryable)
}

/// `DEADLINE_EXCEEDED` -> `DeadlineExceeded`: the REST spelling of a gRPC code as [`code`] spells it.
fn grpc_name(rest: &str) -> String {
    rest.split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase()).unwrap_or_default()
        })
        .collect()
}

/// Converts a failed publish call to `topic`. A missing topic is not retryable, and the error says who should have
/// created it; other failures keep their retryable flag.
pub fn publish(topic: &str, provisioning: Provisioning, e: Error) -> Error {
    if e.kind() != ErrorKind::NotFound {
        return e;
    }
    let who = match provisioning {
        Provisioning::Auto => "it was deleted after tidings created it",
        _ => "gcp.provisioning is not `auto`, so tidings does not create it: create it first",
    };
    Error::new(ErrorKind::NotFound, format!("gcp: publish to {topic} failed: the topic does not exist ({who})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_failures_are_retryable_by_the_status_google_names() {
        let body = |s: &str| format!(r#"{{"error":{{"code":409,"message":"m","status":"{s}"}}}}"#);
        assert!(http("publish on t", 409, &body("ABORTED")).is_retryable());
        assert!(http("publish on t", 504, &body("DEADLINE_EXCEEDED")).is_retryable());
        assert!(!http("publish on t", 409, &body("ALREADY_EXISTS")).is_retryable());
        assert!(!http("publish on t", 400, &body("FAILED_PRECONDITION")).is_retryable());
        assert!(http("publish on t", 503, "upstream down").is_retryable());
        assert!(!http("publish on t", 400, "bad").is_retryable());
        let missing = http("publish on t", 404, &body("NOT_FOUND"));
        assert_eq!(missing.kind(), ErrorKind::NotFound);
        assert!(!missing.is_retryable());
        let named = publish("projects/p/topics/t", Provisioning::Off, missing);
        assert!(named.to_string().contains("gcp.provisioning") && named.to_string().contains("projects/p/topics/t"));
        assert!(!named.is_retryable());
    }
}
