//! Which dead letters a command works on: ids, a reason pattern, everything, narrowed by --since and --grep.

use std::time::SystemTime;

use regex_lite::Regex;
use tidings::DeadLetter;

use crate::args::{Action, Filters};
use crate::exit::{Failure, USAGE};

/// A compiled selection.
pub struct Selection {
    ids: Vec<String>,
    reason: Option<Regex>,
    all: bool,
    since: Option<std::time::Duration>,
    grep: Option<Regex>,
}

fn regex(flag: &str, pattern: &str) -> Result<Regex, Failure> {
    Regex::new(pattern)
        .map_err(|e| Failure::new(USAGE, format!("{flag} {pattern:?} is not a valid regular expression: {e}")))
}

impl Selection {
    /// The filters alone (every dead letter they let through).
    pub fn filters(f: &Filters) -> Result<Self, Failure> {
        Ok(Self {
            ids: Vec::new(),
            reason: None,
            all: true,
            since: f.since.map(Into::into),
            grep: f.grep.as_deref().map(|g| regex("--grep", g)).transpose()?,
        })
    }

    /// An action's selection: exactly one of --id, --reason, --all is required.
    pub fn action(a: &Action) -> Result<Self, Failure> {
        if a.ids.is_empty() && a.reason.is_none() && !a.all {
            return Err(Failure::new(USAGE, "choose the dead letters: --id ID (repeatable), --reason REGEX or --all"));
        }
        let mut s = Self::filters(&a.filters)?;
        s.ids = a.ids.clone();
        s.reason = a.reason.as_deref().map(|r| regex("--reason", r)).transpose()?;
        s.all = a.all;
        Ok(s)
    }

    /// Whether `d` is selected.
    pub fn matches(&self, d: &DeadLetter) -> bool {
        let chosen = self.all
            || self.ids.iter().any(|i| i == d.id.as_str())
            || self.reason.as_ref().is_some_and(|r| r.is_match(&d.reason));
        let recent =
            self.since.is_none_or(|s| SystemTime::now().duration_since(d.dead_lettered_at).is_ok_and(|age| age <= s));
        let grep = self.grep.as_ref().is_none_or(|g| {
            g.is_match(&String::from_utf8_lossy(&d.payload))
                || g.is_match(&d.reason)
                || d.attributes.iter().any(|(k, v)| g.is_match(&format!("{k}={v}")))
        });
        chosen && recent && grep
    }

    /// Ids asked for that are not among `ids` (reported as not found).
    pub fn missing_ids_among(&self, ids: &[String]) -> Vec<String> {
        self.ids.iter().filter(|i| !ids.contains(i)).cloned().collect()
    }

    /// Ids asked for that are not among `found` (reported as not found).
    pub fn missing_ids(&self, found: &[DeadLetter]) -> Vec<String> {
        self.ids.iter().filter(|i| !found.iter().any(|d| d.id.as_str() == i.as_str())).cloned().collect()
    }
}

/// Parses `--rate`: `50` or `50/s`.
pub fn rate(s: &str) -> Result<f64, Failure> {
    let n = s.strip_suffix("/s").unwrap_or(s).trim();
    n.parse::<f64>().ok().filter(|r| r.is_finite() && *r > 0.0).ok_or_else(|| {
        Failure::new(USAGE, format!("--rate {s:?} is invalid: give messages per second, such as 50 or 50/s"))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_parse_with_or_without_unit() {
        assert_eq!(super::rate("50/s").unwrap(), 50.0);
        assert_eq!(super::rate("2.5").unwrap(), 2.5);
        assert!(super::rate("0").unwrap_err().message.contains("--rate \"0\" is invalid"));
        assert!(super::rate("fast").is_err());
    }
}
