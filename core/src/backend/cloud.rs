//! What cloud and server backends share: provisioning modes and the rule that credentials never cross a network
//! in clear.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// What a cloud backend may do to cloud resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provisioning {
    /// Create what is missing, idempotently (the dev default).
    #[default]
    Auto,
    /// Check that resources exist with the declared settings; a difference is an error naming it.
    Verify,
    /// Trust configuration: no admin calls.
    Off,
}

impl Provisioning {
    /// Every mode, as written in configuration.
    pub const VALUES: [&'static str; 3] = ["auto", "verify", "off"];
}

impl FromStr for Provisioning {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "verify" => Ok(Self::Verify),
            "off" => Ok(Self::Off),
            _ => Err(crate::Error::config(format!(
                "provisioning {s:?} is not a provisioning mode; expected one of: {}",
                Self::VALUES.join(", ")
            ))),
        }
    }
}

impl fmt::Display for Provisioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Verify => "verify",
            Self::Off => "off",
        })
    }
}

impl<'de> Deserialize<'de> for Provisioning {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks that `endpoint` uses TLS unless it is on this machine (the emulators): credentials and messages must not
/// cross a network in clear. `key` names the setting in the error.
pub fn require_tls(key: &str, endpoint: &str) -> crate::Result<()> {
    let Some(rest) = endpoint.strip_prefix("http://") else { return Ok(()) };
    let host_port = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    let loopback = host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    Err(crate::Error::config(format!(
        "{key} {endpoint:?} is plain http to a non-loopback host; use https (plain http is allowed only for \
         127.0.0.0/8, ::1 and localhost, where the emulators run)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_only_for_loopback() {
        for ok in [
            "https://sqs.eu-west-1.amazonaws.com",
            "http://127.0.0.1:4566",
            "http://localhost:8085",
            "http://[::1]:1",
            "http://127.9.9.9",
        ] {
            require_tls("aws.endpoint_url", ok).unwrap();
        }
        for bad in
            ["http://10.0.0.5:4566", "http://example.com", "http://pubsub.googleapis.com/v1", "http://[2001:db8::1]:80"]
        {
            let e = require_tls("gcp.endpoint", bad).unwrap_err().to_string();
            assert!(e.contains("gcp.endpoint") && e.contains(bad) && e.contains("https"), "{e}");
        }
    }
}

#[cfg(test)]
mod provisioning_tests {
    use super::Provisioning;

    #[test]
    fn a_bad_mode_names_the_value_and_lists_the_valid_ones() {
        assert_eq!("Verify".parse::<Provisioning>().unwrap(), Provisioning::Verify);
        let e = "maybe".parse::<Provisioning>().unwrap_err().to_string();
        assert!(e.contains("\"maybe\"") && e.contains("auto, verify, off"), "{e}");
    }
}
