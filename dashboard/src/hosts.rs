//! The `Host` check in front of every route, the guard against DNS rebinding: a web page the operator visits can
//! point a name it controls (`evil.example`) at 127.0.0.1 and then read a dashboard on loopback as its own origin,
//! but its requests still name `evil.example` in `Host`. So the dashboard answers only the names it is served under,
//! as development servers (Vite, webpack-dev-server) do:
//!
//! - served by [`Dashboard::serve`](crate::Dashboard::serve) on a loopback address: `localhost`, `127.0.0.1` and
//!   `[::1]` (and the address itself), with the listener's port; on a specific address: that address with the port;
//!   on an unspecified address (`0.0.0.0`, `[::]`): `localhost` and any IP address, with the port;
//! - the router alone ([`Dashboard::router`](crate::Dashboard::router), embedded behind the application's own
//!   server, whose address it does not know): `localhost` and any IP address, on any port;
//! - and, in both cases, the names given to [`Dashboard::allowed_hosts`](crate::Dashboard::allowed_hosts).
//!
//! An IP address in `Host` cannot be rebound (rebinding needs a name the attacker's DNS answers), nor can
//! `localhost`, which browsers resolve themselves.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A host name the dashboard answers besides its own: `name` (any port), `name:port`, `.example.com` (the domain and
/// its subdomains, any port), an IP address (`10.0.0.5`, `[fd00::5]:7878`), or `*` (any host: only behind a proxy
/// that checks `Host` itself). Parse one with [`str::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost(Pattern);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Name { name: String, port: Option<u16> },
    Domain { suffix: String },
}

/// Why a host name given to [`AllowedHost`] was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "allowed host {given:?} {rule}: give a host name or IP address, optionally with :port (dash.example.com, \
     dash.example.com:7878, [fd00::5]:7878), .example.com for a domain and its subdomains, or * for any host"
)]
pub struct InvalidHost {
    given: String,
    rule: &'static str,
}

impl FromStr for AllowedHost {
    type Err = InvalidHost;

    fn from_str(s: &str) -> Result<Self, InvalidHost> {
        let fail = |rule| Err(InvalidHost { given: s.to_string(), rule });
        let t = s.trim();
        if t == "*" {
            return Ok(Self(Pattern::Any));
        }
        if t.contains("://") || t.contains('/') {
            return fail("is a URL, not a host name");
        }
        if let Some(suffix) = t.strip_prefix('.') {
            let suffix = normal(suffix);
            if suffix.contains(':') {
                return fail("names a domain with a port (a domain pattern matches any port)");
            }
            if !is_name(&suffix) {
                return fail("is not a domain name (letters, digits, '-' and '.')");
            }
            return Ok(Self(Pattern::Domain { suffix }));
        }
        match split(t) {
            Some((name, port)) if !name.is_empty() && (ip(&name).is_some() || is_name(&name)) => {
                Ok(Self(Pattern::Name { name, port }))
            }
            Some((name, _)) if name.is_empty() => fail("is empty"),
            _ => fail("is not a host name or IP address with an optional :port"),
        }
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Pattern::Any => f.write_str("*"),
            Pattern::Name { name, port: Some(p) } => write!(f, "{name}:{p}"),
            Pattern::Name { name, port: None } => f.write_str(name),
            Pattern::Domain { suffix } => write!(f, ".{suffix}"),
        }
    }
}

impl AllowedHost {
    fn matches(&self, name: &str, port: Option<u16>) -> bool {
        match &self.0 {
            Pattern::Any => true,
            Pattern::Name { name: n, port: p } => {
                same_host(n, name) && p.is_none_or(|p| port.unwrap_or(DEFAULT_PORT) == p)
            }
            Pattern::Domain { suffix } => {
                name == suffix || name.strip_suffix(suffix.as_str()).is_some_and(|rest| rest.ends_with('.'))
            }
        }
    }
}

/// The port a `Host` without one names (plain HTTP).
const DEFAULT_PORT: u16 = 80;

/// Where the dashboard is served: it answers the names of that place.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Own {
    /// The router alone, behind the application's server: `localhost` and IP addresses, any port.
    Embedded,
    /// [`crate::Dashboard::serve`] on this listener.
    Listening(SocketAddr),
}

/// The hosts one router answers.
#[derive(Debug)]
pub(crate) struct Hosts {
    own: Own,
    extra: Vec<AllowedHost>,
}

impl Hosts {
    pub(crate) fn new(own: Own, extra: Vec<AllowedHost>) -> Self {
        Self { own, extra }
    }

    /// Whether a request naming `host` (a `Host` header's value) is answered.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split(host.trim()) else { return false };
        if self.extra.iter().any(|h| h.matches(&name, port)) {
            return true;
        }
        match self.own {
            Own::Embedded => name == "localhost" || ip(&name).is_some(),
            Own::Listening(addr) => {
                let port_ok = port.unwrap_or(DEFAULT_PORT) == addr.port();
                let ip_ok = if addr.ip().is_unspecified() {
                    name == "localhost" || ip(&name).is_some()
                } else if addr.ip().is_loopback() {
                    name == "localhost"
                        || ip(&name).is_some_and(|a| {
                            a == IpAddr::from([127, 0, 0, 1]) || a == Ipv6Addr::LOCALHOST || a == addr.ip()
                        })
                } else {
                    ip(&name) == Some(addr.ip())
                };
                port_ok && ip_ok
            }
        }
    }

    /// The names answered, for the refusal's message.
    fn describe(&self) -> String {
        let mut v: Vec<String> = match self.own {
            Own::Embedded => vec!["localhost and any IP address (any port)".into()],
            Own::Listening(a) if a.ip().is_unspecified() => {
                vec![format!("localhost and any IP address on port {}", a.port())]
            }
            Own::Listening(a) if a.ip().is_loopback() => {
                let p = a.port();
                let mut v = vec![format!("localhost:{p}"), format!("127.0.0.1:{p}"), format!("[::1]:{p}")];
                let own = SocketAddr::new(a.ip(), p).to_string();
                if !v.contains(&own) {
                    v.push(own);
                }
                v
            }
            Own::Listening(a) => vec![a.to_string()],
        };
        v.extend(self.extra.iter().map(|h| h.to_string()));
        v.join(", ")
    }
}

/// Splits a `Host` value into its lowercased name (IPv6 in brackets) and port; `None` when it is not one.
fn split(host: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => return None,
        };
        (&host[..=end], port)
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let name = normal(name);
    if name.contains(':') && !name.starts_with('[') {
        return None;
    }
    Some((name, port))
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// The IP address a host name is (IPv6 in brackets).
fn ip(name: &str) -> Option<IpAddr> {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => name.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

fn same_host(a: &str, b: &str) -> bool {
    match (ip(a), ip(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], message)
        .into_response()
}

/// The middleware: answers only requests whose `Host` is allowed.
pub(crate) async fn check(
    axum::extract::State(hosts): axum::extract::State<Arc<Hosts>>,
    req: Request,
    next: Next,
) -> Response {
    let given = req.headers().get(header::HOST).map(|v| v.to_str().unwrap_or("(not text)").to_string());
    let Some(host) = given.or_else(|| req.uri().authority().map(|a| a.to_string())) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "Blocked request: it names no host (no Host header). This dashboard answers {}.\n",
                hosts.describe()
            ),
        );
    };
    if hosts.allows(&host) {
        return next.run(req).await;
    }
    let shown: String = host.chars().take(100).collect();
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string());
    tracing::warn!(
        target: "tidings::dashboard",
        host = %shown,
        peer = peer.as_deref().unwrap_or("unknown"),
        "refused a request for a host this dashboard does not answer (DNS rebinding guard)"
    );
    let name = split(&shown).map_or(shown.clone(), |(n, _)| n);
    refuse(
        StatusCode::FORBIDDEN,
        format!(
            "Blocked request: this dashboard does not answer the host {shown:?} (a guard against DNS rebinding). It \
             answers {}. If you reach it under that name, allow it: `tidings dashboard --allowed-host {name}`, or \
             Dashboard::allowed_hosts in an application.\n",
            hosts.describe()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(own: Own, extra: &[&str]) -> Hosts {
        Hosts::new(own, extra.iter().map(|h| h.parse().unwrap()).collect())
    }

    #[test]
    fn a_loopback_listener_answers_its_loopback_names_on_its_port_only() {
        let h = hosts(Own::Listening("127.0.0.1:7878".parse().unwrap()), &[]);
        for ok in ["localhost:7878", "LOCALHOST:7878", "localhost.:7878", "127.0.0.1:7878", "[::1]:7878"] {
            assert!(h.allows(ok), "{ok}");
        }
        for no in [
            "evil.example",
            "evil.example:7878",
            "localhost:7879",
            "localhost",
            "127.0.0.2:7878",
            "10.0.0.5:7878",
            "localhost.evil.example:7878",
            "",
            "localhost:7878:1",
            "[::1:7878",
        ] {
            assert!(!h.allows(no), "{no}");
        }
        assert!(hosts(Own::Listening("127.0.0.2:80".parse().unwrap()), &[]).allows("127.0.0.2"));
        assert!(hosts(Own::Listening("[::1]:7878".parse().unwrap()), &[]).allows("[0:0::1]:7878"));
    }

    #[test]
    fn a_listener_on_a_specific_address_answers_that_address_and_an_unspecified_one_any_address() {
        let h = hosts(Own::Listening("10.0.0.5:7878".parse().unwrap()), &[]);
        assert!(h.allows("10.0.0.5:7878"));
        assert!(!h.allows("localhost:7878") && !h.allows("10.0.0.6:7878") && !h.allows("dash.example:7878"));
        let h = hosts(Own::Listening("0.0.0.0:7878".parse().unwrap()), &[]);
        assert!(h.allows("10.0.0.5:7878") && h.allows("[fd00::5]:7878") && h.allows("localhost:7878"));
        assert!(!h.allows("10.0.0.5:80") && !h.allows("evil.example:7878"));
    }

    #[test]
    fn the_embedded_router_answers_localhost_and_ip_addresses_on_any_port() {
        let h = hosts(Own::Embedded, &[]);
        for ok in ["localhost", "localhost:3000", "127.0.0.1:8080", "10.1.2.3", "[::1]:9"] {
            assert!(h.allows(ok), "{ok}");
        }
        assert!(!h.allows("evil.example") && !h.allows("app.internal:8080"));
    }

    #[test]
    fn configured_names_add_to_the_own_ones() {
        let h = hosts(
            Own::Listening("127.0.0.1:7878".parse().unwrap()),
            &["dash.test", "ops.test:443", ".corp.example", "[fd00::5]"],
        );
        assert!(h.allows("dash.test:7878") && h.allows("dash.test") && h.allows("DASH.test:1"));
        assert!(h.allows("ops.test:443") && !h.allows("ops.test:7878") && !h.allows("ops.test"));
        assert!(h.allows("corp.example:1") && h.allows("a.b.corp.example") && !h.allows("evilcorp.example"));
        assert!(h.allows("[fd00:0::5]:1"));
        assert!(!h.allows("evil.example:7878"));
        assert!(hosts(Own::Embedded, &["*"]).allows("anything.example:1"));
        assert!(hosts(Own::Embedded, &["*"]).describe().ends_with(", *"));
    }

    #[test]
    fn a_bad_allowed_host_is_refused_naming_it_and_the_rule() {
        for (bad, rule) in [
            ("http://dash.test", "is a URL"),
            ("dash.test/x", "is a URL"),
            ("", "is empty"),
            (":80", "is empty"),
            ("dash.test:http", "optional :port"),
            ("dash test", "optional :port"),
            (".corp.example:80", "with a port"),
            ("[::1", "optional :port"),
        ] {
            let e = bad.parse::<AllowedHost>().unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")) && e.contains(rule), "{bad}: {e}");
        }
        assert_eq!("Dash.Test:80".parse::<AllowedHost>().unwrap().to_string(), "dash.test:80");
    }

    #[test]
    fn the_refusal_names_what_is_answered() {
        let h = hosts(Own::Listening("127.0.0.1:7878".parse().unwrap()), &["dash.test"]);
        assert_eq!(h.describe(), "localhost:7878, 127.0.0.1:7878, [::1]:7878, dash.test");
    }
}
