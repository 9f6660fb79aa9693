//! Validation of topic and subscription names, shared by every backend.

use crate::error::{Error, Result};

/// Longest allowed topic or subscription name.
pub const MAX_NAME_LEN: usize = 63;

/// Checks a topic or subscription name against the portable rule:
/// 1-63 characters matching `^[a-z]([-a-z0-9]*[a-z0-9])?$`.
///
/// `what` names the kind of thing ("topic", "subscription") in the error.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let rule = "1-63 characters matching ^[a-z]([-a-z0-9]*[a-z0-9])?$";
    let bad = |why: &str| Err(Error::invalid(format!("invalid {what} name {name:?}: {why}; the rule is {rule}")));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("it is {} characters long", name.len()));
    }
    let bytes = name.as_bytes();
    if !bytes[0].is_ascii_lowercase() {
        return bad("it must start with a lowercase letter a-z");
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return bad(&format!("character {c:?} is not allowed"));
    }
    if bytes[bytes.len() - 1] == b'-' {
        return bad("it must not end with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for n in ["a", "signups", "user-created", "a1", "x-9-y", &"a".repeat(63)] {
            validate_name("topic", n).unwrap();
        }
    }

    #[test]
    fn rejects_invalid_names_naming_value_and_rule() {
        for (n, why) in [
            ("", "empty"),
            ("Signups", "lowercase"),
            ("1abc", "lowercase"),
            ("ab-", "end with"),
            ("a_b", "'_'"),
            ("a.b", "'.'"),
            (&"a".repeat(64), "64 characters"),
        ] {
            let e = validate_name("topic", n).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
            assert!(msg.contains(&format!("{n:?}")), "{msg}");
            assert!(msg.contains(why), "{msg}");
            assert!(msg.contains("^[a-z]([-a-z0-9]*[a-z0-9])?$"), "{msg}");
        }
    }
}
