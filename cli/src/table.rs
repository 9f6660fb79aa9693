//! Plain-text tables (bold headers on a terminal, unless NO_COLOR is set) and human formats for ages and counts.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

/// A cell shown when a backend cannot tell the figure.
pub const UNKNOWN: &str = "–";

/// Prints rows under a header, columns padded to their widest cell.
pub fn print(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == n { c } else { format!("{c}{}", " ".repeat(widths[i] - c.chars().count())) })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let head = line(header.iter().map(|h| h.to_string()).collect());
    if color() {
        println!("\x1b[1m{head}\x1b[0m");
    } else {
        println!("{head}");
    }
    for r in rows {
        println!("{}", line(r.clone()));
    }
}

/// Whether to use colour: stdout is a terminal and NO_COLOR is unset.
pub fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// A count, or the unknown mark.
pub fn count(n: Option<u64>) -> String {
    n.map_or_else(|| UNKNOWN.to_string(), |n| n.to_string())
}

/// A duration, short: `45s`, `12m`, `3h`, `2d`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// How long ago `t` was.
pub fn ago(t: SystemTime) -> String {
    format!("{} ago", age(SystemTime::now().duration_since(t).unwrap_or_default()))
}

/// RFC 3339 time, UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Text cut to `n` characters on one line.
pub fn cut(s: &str, n: usize) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= n {
        return one_line;
    }
    let mut out: String = one_line.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Prints a JSON value, pretty.
pub fn json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON output serializes"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_short_and_cut_text_stays_on_one_line() {
        assert_eq!(age(Duration::from_secs(45)), "45s");
        assert_eq!(age(Duration::from_secs(3 * 3600 + 5)), "3h");
        assert_eq!(cut("a\nb", 10), "a b");
        assert_eq!(cut("abcdefgh", 5), "abcd…");
        assert_eq!(count(None), UNKNOWN);
    }
}
