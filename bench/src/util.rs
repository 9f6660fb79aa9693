//! Measuring helpers: peak RSS (resettable per phase), the payload, JSON output.

use serde::{Deserialize, Serialize};

/// The payload: about 100 bytes of JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub user: String,
    pub email: String,
    pub plan: String,
    pub ts: u64,
}

pub fn event(i: u64) -> Event {
    Event {
        id: i,
        user: format!("user-{:08}", i % 100_000_000),
        email: format!("u{:08}@example.com", i % 100_000_000),
        plan: "pro".into(),
        ts: 1_764_000_000_000 + i,
    }
}

pub fn arg(args: &[String], name: &str) -> Option<u64> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok())
}

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// Current RSS in bytes.
pub fn rss() -> u64 {
    status_kb("VmRSS:") * 1024
}

/// Peak RSS in bytes since the last [`reset_peak`].
pub fn peak_rss() -> u64 {
    status_kb("VmHWM:") * 1024
}

/// Resets the peak RSS to the current RSS (Linux `clear_refs` 5).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// Minor page faults of this process so far (`/proc/self/stat`, field 10): memory touched for the first time.
pub fn minor_faults() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces: state is field 3, minflt field 10.
    s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(7)?.parse().ok()).unwrap_or(0)
}

/// CPU seconds this process has used so far (user and system, `/proc/self/stat` fields 14 and 15, in clock ticks of
/// 1/100 s).
pub fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Context switches of this process so far: voluntary and involuntary, summed over its threads
/// (`/proc/self/task/*/status`).
pub fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .map(|t| {
            let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            s.lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}
