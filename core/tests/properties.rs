//! Property tests of input validation: names and configuration parsing never panic and agree with their rules.

use proptest::prelude::*;
use tidings_core::{validate_name, ErrorKind, Settings};

/// The rule, written independently: `^[a-z]([-a-z0-9]*[a-z0-9])?$`, 1-63 characters.
fn reference(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn names_follow_the_rule(name in "[a-z0-9A-Z_. -]{0,70}") {
        let got = validate_name("topic", &name);
        prop_assert_eq!(got.is_ok(), reference(&name), "{:?}: {:?}", name, got);
        if let Err(e) = got {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
            let quoted = format!("{:?}", name);
            prop_assert!(e.to_string().contains(&quoted), "{}", e);
        }
    }

    #[test]
    fn any_text_parses_to_settings_or_a_config_error(text in "\\PC{0,200}") {
        if let Err(e) = Settings::from_toml(&text) {
            prop_assert!(matches!(e.kind(), ErrorKind::Config | ErrorKind::InvalidInput), "{:?}", e);
        }
    }

    #[test]
    fn subscription_overrides_parse_exactly_when_valid_or_name_the_key(
        key in "(max_concurrency|ack_deadline|message_retention|min_backoff|max_backoff|max_retries|bogus)",
        value in "(\"[0-9]{1,4}(ms|s|m|h)\"|[1-9][0-9]{0,5}|0|-[1-9][0-9]{0,2}|\"soon\"|true)",
    ) {
        let text = format!("[subscriptions.signups.email]\n{key} = {value}\n");
        // The rule, written independently: durations are quoted humantime strings, counts are non-negative integers.
        let is_duration = value.starts_with('"') && value != "\"soon\"";
        let is_count = value.parse::<i64>().is_ok_and(|n| n >= 0);
        let valid = match key.as_str() {
            "max_concurrency" | "max_retries" => is_count,
            "bogus" => false,
            _ => is_duration,
        };
        match Settings::from_toml(&text) {
            Ok(s) => {
                prop_assert!(valid, "{} = {} was accepted", key, value);
                prop_assert!(s.subscription_override("signups", "email").is_some());
            }
            Err(e) => {
                prop_assert!(!valid, "{} = {} was refused: {}", key, value, e);
                prop_assert_eq!(e.kind(), ErrorKind::Config);
                let m = e.to_string();
                prop_assert!(m.contains(&key), "the error names the key {}: {}", key, m);
            }
        }
    }
}
