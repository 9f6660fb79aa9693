//! Mapping AWS SDK errors to tidings errors with a retryable flag.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tidings_core::{Error, ErrorKind};

/// Codes that mean "try again later".
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "KMSThrottling",
];

/// Converts an SDK error of operation `op` on `resource`. Retryable, as the SDK's own retry classifier has it: a
/// throttling or internal error code, a 5xx or 429 status (whatever its code), a timeout, a network failure.
pub fn sdk<E>(op: &str, resource: &str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retryable = match &e {
        SdkError::ServiceError(s) => {
            let status = s.raw().status();
            status.is_server_error()
                || status.as_u16() == 429
                || s.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c))
        }
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    };
    let not_found = match &e {
        SdkError::ServiceError(s) => s
            .err()
            .code()
            .is_some_and(|c| c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist") || c == "NotFound"),
        _ => false,
    };
    let msg = format!("aws: {op} on {resource} failed: {}", DisplayErrorContext(&e));
    let kind = if not_found { ErrorKind::NotFound } else { ErrorKind::Backend };
    Error::new(kind, msg).with_retryable(retryable).with_source(e)
}

/// Error for a partially failed batch entry.
pub fn entry(op: &str, resource: &str, code: &str, message: Option<&str>, sender_fault: bool) -> Error {
    Error::backend(
        format!("aws: {op} on {resource}: entry failed with {code}: {}", message.unwrap_or("")),
        !sender_fault || RETRYABLE_CODES.contains(&code),
    )
}
