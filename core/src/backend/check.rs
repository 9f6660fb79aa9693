//! The checks `tidings doctor` prints: each passes, fails or is skipped, with the reason.

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Checked and fine.
    Pass,
    /// Checked and wrong: the detail says what and how to fix it.
    Fail,
    /// Not checked: the detail says why and what was left unchecked.
    Skipped,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, such as `permissions: dead-letter topic dev-orders--billing-dlq`.
    pub name: String,
    /// Whether it passed, failed or was skipped; `tidings doctor` exits non-zero when any check failed.
    pub status: Status,
    /// Why: what was found, or why it was not checked.
    pub detail: String,
}

impl Check {
    /// A check that passed.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.into(), status: Status::Pass, detail: detail.into() }
    }

    /// A check that failed.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.into(), status: Status::Fail, detail: detail.into() }
    }

    /// A check that could not be made.
    pub fn skipped(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.into(), status: Status::Skipped, detail: detail.into() }
    }
}
