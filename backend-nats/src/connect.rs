//! Connecting: server URLs from `nats.url` or `NATS_URL`, credentials, TLS; plain text only to this machine.

use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};
use tidings_core::{Error, Result};

use crate::config::NatsConfig;

/// The server used when neither `nats.url` nor `NATS_URL` is set.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// The server URLs to connect to and the setting they came from (for error messages).
pub fn urls(config: &NatsConfig) -> Result<(Vec<ServerAddr>, &'static str, String)> {
    let env = std::env::var("NATS_URL").ok().filter(|v| !v.trim().is_empty());
    let (key, raw) = match (&config.url, env) {
        (Some(u), _) => ("nats.url", u.clone()),
        (None, Some(u)) => ("NATS_URL", u),
        (None, None) => ("nats.url", DEFAULT_URL.to_string()),
    };
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let addr: ServerAddr = part.parse().map_err(|e| {
            Error::config(format!("{key} {part:?} is not a NATS server URL (nats://host:port or tls://host:port): {e}"))
        })?;
        if !matches!(addr.scheme(), "nats" | "tls") {
            return Err(Error::config(format!(
                "{key} {part:?} has the scheme {:?}; tidings connects with nats:// or tls://",
                addr.scheme()
            )));
        }
        require_tls(key, part, &addr, config.tls_required)?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err(Error::config(format!("{key} {raw:?} names no server")));
    }
    Ok((out, key, raw))
}

/// Credentials and messages must not cross a network in clear: a `nats://` URL to a host other than this machine
/// needs `nats.tls_required = true` (or a `tls://` URL).
fn require_tls(key: &str, url: &str, addr: &ServerAddr, tls_required: bool) -> Result<()> {
    if addr.tls_required() || tls_required {
        return Ok(());
    }
    let host = addr.host();
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    Err(Error::config(format!(
        "{key} {url:?} is plain text to a non-loopback host; use tls://{host}:{} or set nats.tls_required = true \
         (plain text is allowed only for 127.0.0.0/8, ::1 and localhost)",
        addr.port()
    )))
}

/// Client options from the config: one authentication method at most, TLS files, timeouts.
pub async fn options(config: &NatsConfig) -> Result<ConnectOptions> {
    let methods = [
        config.user.is_some() || config.password.is_some(),
        config.token.is_some(),
        config.nkey.is_some(),
        config.creds_file.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(Error::config(
            "nats: set one authentication method: nats.user + nats.password, nats.token, nats.nkey or nats.creds_file",
        ));
    }
    let mut o = ConnectOptions::new()
        .name("tidings")
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(config.request_timeout))
        // Keep reconnecting for ever: a network cut must not end the subscription.
        .max_reconnects(None)
        .require_tls(config.tls_required);
    match (&config.user, &config.password) {
        (Some(u), Some(p)) => o = o.user_and_password(u.clone(), p.clone()),
        (Some(_), None) => return Err(Error::config("missing config key `nats.password` (nats.user is set)")),
        (None, Some(_)) => return Err(Error::config("missing config key `nats.user` (nats.password is set)")),
        (None, None) => {}
    }
    if let Some(t) = &config.token {
        o = o.token(t.clone());
    }
    if let Some(seed) = &config.nkey {
        if !seed.starts_with("SU") {
            return Err(Error::config(
                "nats.nkey must be a user NKey seed (it starts with \"SU\"); the public key (\"U...\") cannot sign",
            ));
        }
        o = o.nkey(seed.clone());
    }
    if let Some(path) = &config.creds_file {
        o = o.credentials_file(path).await.map_err(|e| {
            Error::config(format!("nats.creds_file {}: cannot read a credentials file: {e}", path.display()))
        })?;
    }
    for (key, file) in [
        ("nats.tls_ca_file", &config.tls_ca_file),
        ("nats.tls_cert_file", &config.tls_cert_file),
        ("nats.tls_key_file", &config.tls_key_file),
    ] {
        if let Some(f) = file.as_ref().filter(|f| !f.is_file()) {
            return Err(Error::config(format!("{key} {} does not exist", f.display())));
        }
    }
    if let Some(ca) = &config.tls_ca_file {
        o = o.add_root_certificates(ca.clone());
    }
    match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(c), Some(k)) => o = o.add_client_certificate(c.clone(), k.clone()),
        (None, None) => {}
        _ => return Err(Error::config("nats.tls_cert_file and nats.tls_key_file go together (mutual TLS)")),
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> NatsConfig {
        NatsConfig { url: Some(url.into()), ..NatsConfig::default() }
    }

    #[test]
    fn plain_text_is_only_for_loopback() {
        for ok in ["nats://127.0.0.1:4222", "localhost", "nats://[::1]:4222", "tls://nats.example.com:4222"] {
            urls(&cfg(ok)).unwrap();
        }
        let both = urls(&cfg("nats://127.0.0.1:4222, nats://127.0.0.2:4223")).unwrap();
        assert_eq!(both.0.len(), 2);
        for bad in ["nats://10.0.0.5:4222", "nats.example.com", "nats://127.0.0.1:4222,nats://192.168.1.9:4222"] {
            let e = urls(&cfg(bad)).unwrap_err().to_string();
            assert!(e.contains("nats.url") && e.contains("plain text") && e.contains("tls://"), "{e}");
        }
        let tls = NatsConfig { tls_required: true, ..cfg("nats://10.0.0.5:4222") };
        urls(&tls).unwrap();
    }

    #[test]
    fn bad_schemes_and_conflicting_credentials_are_named() {
        let e = urls(&cfg("http://127.0.0.1:4222")).unwrap_err().to_string();
        assert!(e.contains("\"http://127.0.0.1:4222\"") && e.contains("nats.url") && e.contains("tls://"), "{e}");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let two = NatsConfig { token: Some("t".into()), nkey: Some("SUx".into()), ..NatsConfig::default() };
        let e = rt.block_on(options(&two)).unwrap_err().to_string();
        assert!(e.contains("one authentication method"), "{e}");
        let public = NatsConfig { nkey: Some("UABC".into()), ..NatsConfig::default() };
        let e = rt.block_on(options(&public)).unwrap_err().to_string();
        assert!(e.contains("nats.nkey") && e.contains("SU"), "{e}");
        let half = NatsConfig { user: Some("u".into()), ..NatsConfig::default() };
        assert!(rt.block_on(options(&half)).unwrap_err().to_string().contains("nats.password"));
    }
}
