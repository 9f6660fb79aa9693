//! The action log: each redrive or purge with who asked and what happened, kept in memory for the page and logged
//! through tracing.

use std::sync::Mutex;

use serde::Serialize;

/// Entries kept for the page.
const KEEP: usize = 200;

/// One action.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// When, milliseconds since the epoch.
    pub at: String,
    /// Who, in short: the peer address and the client's name (`127.0.0.1:50312 (Chrome 131)`).
    pub who: String,
    /// The peer address, as the connection shows it (`unknown peer` where the server gives none).
    pub peer: String,
    /// The client's short name from its user agent: `curl 8.5`, `Chrome 131`, `Firefox 133`, `tidings-cli 0.1`.
    pub client: String,
    /// The full user agent (empty when the request sent none).
    pub user_agent: String,
    /// `redrive` or `purge`.
    pub action: String,
    /// `topic/subscription`.
    pub subscription: String,
    /// The reason group acted on.
    pub reason: String,
    /// Messages moved or deleted, or the error.
    pub outcome: String,
}

#[derive(Debug, Default)]
pub(crate) struct Log {
    entries: Mutex<Vec<Entry>>,
}

impl Log {
    pub(crate) fn record(&self, e: Entry) {
        tracing::info!(
            target: "tidings::dashboard",
            who = %e.who,
            user_agent = %e.user_agent,
            action = %e.action,
            subscription = %e.subscription,
            reason = %e.reason,
            outcome = %e.outcome,
            "dashboard action"
        );
        let mut v = self.entries.lock().unwrap();
        v.push(e);
        let excess = v.len().saturating_sub(KEEP);
        v.drain(..excess);
    }

    pub(crate) fn list(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().iter().rev().cloned().collect()
    }
}

/// Longest user agent kept.
const AGENT_MAX: usize = 300;

impl Entry {
    /// Who asked: `peer` (an address) and the request's user agent, if any.
    pub(crate) fn who(peer: String, user_agent: Option<&str>) -> (String, String, String, String) {
        let agent: String = user_agent.unwrap_or("").trim().chars().take(AGENT_MAX).collect();
        let client = client(&agent);
        (format!("{peer} ({client})"), peer, client, agent)
    }
}

/// A short name for a user agent: the browser and its major version (`Chrome 131`, `Edge 131`, `Firefox 133`,
/// `Safari 17.1`), else the first product with its version to the minor (`curl 8.5`, `tidings-cli 0.1`).
pub(crate) fn client(agent: &str) -> String {
    if agent.is_empty() {
        return "no user agent".into();
    }
    let products: Vec<(&str, &str)> = agent
        .split_whitespace()
        .filter_map(|t| t.split_once('/').or(Some((t, ""))))
        .filter(|(n, _)| !n.starts_with('(') && !n.ends_with(')') && !n.is_empty())
        .collect();
    let version = |name: &str| products.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let major = |v: &str| v.split('.').next().unwrap_or("").to_string();
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    let named = |label: &str, v: String| if v.is_empty() { label.to_string() } else { format!("{label} {v}") };
    // Order matters: Edge and Opera say Chrome too, Chrome says Safari, and each browser says Mozilla.
    for (token, label) in
        [("Edg", "Edge"), ("OPR", "Opera"), ("Firefox", "Firefox"), ("Chrome", "Chrome"), ("Chromium", "Chromium")]
    {
        if let Some(v) = version(token) {
            return named(label, major(v));
        }
    }
    if let Some(v) = version("HeadlessChrome") {
        return named("Chrome", major(v)) + " headless";
    }
    if version("Safari").is_some() {
        return named("Safari", version("Version").map(minor).unwrap_or_default());
    }
    let (name, v) = products.first().copied().unwrap_or((agent, ""));
    let short: String = named(name, minor(v)).chars().take(40).collect();
    short
}

#[cfg(test)]
mod tests {
    use super::client;

    #[test]
    fn a_user_agent_is_shortened_to_the_client_and_its_version() {
        for (agent, short) in [
            ("curl/8.5.0", "curl 8.5"),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome 131",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.6778.85 \
                 Safari/537.36",
                "Chrome 131 headless",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 \
                 Safari/537.36 Edg/131.0.2903.70",
                "Edge 131",
            ),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "Firefox 133"),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) \
                 Version/17.1 Safari/605.1.15",
                "Safari 17.1",
            ),
            ("tidings-cli/0.1.0", "tidings-cli 0.1"),
            ("python-requests/2.31.0", "python-requests 2.31"),
            ("router-test", "router-test"),
            ("", "no user agent"),
        ] {
            assert_eq!(client(agent), short, "{agent}");
        }
        assert!(client(&"x".repeat(500)).chars().count() <= 40);
    }
}
