//! Exit codes (documented in README.md and `tidings --help`) and the mapping from errors to them.

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
