//! Exit codes (documented on the book's CLI page and in `tidings --help`) and the mapping from errors to them.

use tidings::{Error, ErrorKind};

/// Success.
pub const OK: i32 = 0;
/// The backend failed (network, permissions, broker error).
pub const BACKEND: i32 = 1;
/// Bad arguments or input (clap uses 2 for usage errors too).
pub const USAGE: i32 = 2;
/// Configuration: missing or bad settings, or a backend the CLI cannot reach (the in-memory bus).
pub const CONFIG: i32 = 3;
/// A topic, subscription or dead letter that does not exist.
pub const NOT_FOUND: i32 = 4;
/// A destructive action not confirmed.
pub const NOT_CONFIRMED: i32 = 5;
/// `tidings doctor`: a check failed (each is printed with the reason).
pub const DOCTOR: i32 = 6;
/// Interrupted (Ctrl-C, SIGTERM) after doing part of the work, which was reported.
pub const INTERRUPTED: i32 = 130;

/// The help text's table of exit codes.
pub const HELP: &str = "Exit codes: 0 done; 1 backend error; 2 bad arguments or input; 3 configuration (or the \
in-memory bus, which a separate process cannot reach); 4 not found; 5 not confirmed; 6 a doctor check failed; 130 interrupted (what was done \
is printed).";

/// `tidings --help`'s closing lines: the exit codes and where the manual is.
pub fn help() -> String {
    format!("{HELP}\n\nManual: {} (every command, with examples)", tidings::book::url(tidings::book::CLI))
}

/// A backend error's text as printed: without `verbose`, cut before the cloud SDK's debug dump that follows its
/// sentence (` (DispatchFailure(…))`, ` (ServiceError(ServiceError { … }))`), with a pointer to --verbose.
pub fn detail(text: &str, verbose: bool) -> String {
    match dump_at(text) {
        Some(at) if !verbose => format!("{} (--verbose prints the SDK's details)", &text[..at]),
        _ => text.to_string(),
    }
}

/// Where a Rust debug dump starts: ` (` then a type or variant name then `(` or ` {`.
fn dump_at(text: &str) -> Option<usize> {
    text.match_indices(" (").map(|(i, _)| i).find(|&i| {
        let rest = &text[i + 2..];
        let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        name_len > 0
            && rest.starts_with(|c: char| c.is_ascii_uppercase())
            && (rest[name_len..].starts_with('(') || rest[name_len..].starts_with(" {"))
    })
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            ErrorKind::Config => CONFIG,
            ErrorKind::NotFound => NOT_FOUND,
            ErrorKind::InvalidInput | ErrorKind::MessageTooLarge | ErrorKind::Codec => USAGE,
            _ => BACKEND,
        };
        Failure::new(code, e.to_string())
    }
}

pub type Outcome = Result<(), Failure>;

#[cfg(test)]
mod tests {
    use super::detail;

    #[test]
    fn the_sdk_dump_is_cut_from_the_sentence_unless_verbose() {
        let text = "aws: ListTopics on shop- failed: dispatch failure: io error: client error (Connect): tcp connect \
                    error: Connection refused (os error 111) (DispatchFailure(DispatchFailure { source: \
                    ConnectorError { kind: Io, source: hyper_util::client::legacy::Error(Connect, ConnectError) } }))";
        let short = detail(text, false);
        assert_eq!(
            short,
            "aws: ListTopics on shop- failed: dispatch failure: io error: client error (Connect): tcp connect error: \
             Connection refused (os error 111) (--verbose prints the SDK's details)"
        );
        assert_eq!(detail(text, true), text);
        let service = "aws: GetQueueUrl on q failed: service error: unhandled error (AccessDenied): not allowed \
                       (ServiceError(ServiceError { source: Unhandled(Unhandled { source: ErrorMetadata { code: \
                       Some(\"AccessDenied\") } }), raw: Response { status: StatusCode(403) } }))";
        assert_eq!(
            detail(service, false),
            "aws: GetQueueUrl on q failed: service error: unhandled error (AccessDenied): not allowed (--verbose \
             prints the SDK's details)"
        );
        let plain = "no subscription \"nosuch\" of topic \"orders\" (`tidings ls` lists what there is)";
        assert_eq!(detail(plain, false), plain);
    }
}
