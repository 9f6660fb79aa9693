//! Configuration: defaults < optional `tidings.toml` (path from `TIDINGS_CONFIG`) < `TIDINGS_*` environment.
//!
//! ```toml
//! backend = "local"            # or TIDINGS_BACKEND=local|aws|gcp
//! name_prefix = "dev-"         # cloud resource names get this prefix
//!
//! [names]                      # per-name overrides: logical name -> cloud name (before the prefix)
//! signups = "user-signups"
//!
//! [subscriptions.signups.email]   # override what the code declares
//! max_concurrency = 10
//! ack_deadline = "60s"
//! min_backoff = "1s"
//! ```
//!
//! Every other top-level table is a backend's section (`[aws]`, `[gcp]`, ...), read and checked by that backend
//! through [`Settings::section`]; [`Settings::sections`] lists them so the caller can reject a misspelt one.
//!
//! Subscription overrides are keyed by the names the code declares. Environment variables cannot hold `-`, so
//! `subscriptions.signup_events.email_sender` (from `TIDINGS_SUBSCRIPTIONS__SIGNUP_EVENTS__EMAIL_SENDER__...`) also
//! matches topic `signup-events`, subscription `email-sender`. An override that matches no declared subscription is
//! reported: see `Bus::verify_overrides`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::name::validate_name;
use crate::subscription::SubscriptionOverride;

/// Environment variable naming the config file.
pub const CONFIG_PATH_ENV: &str = "TIDINGS_CONFIG";
/// Config file read when `TIDINGS_CONFIG` is unset (optional).
pub const DEFAULT_CONFIG_FILE: &str = "tidings.toml";
/// Prefix of environment keys; nested keys use `__` (`TIDINGS_AWS__REGION` is `aws.region`).
pub const ENV_PREFIX: &str = "TIDINGS";

/// Settings shared by every backend, plus the raw tree for backend sections.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `local`, `aws` or `gcp` (default `local`).
    pub backend: String,
    /// Prefix of every cloud resource name, per environment (`dev-`, `prod-`).
    pub name_prefix: String,
    /// Logical name to cloud name, before the prefix.
    pub names: BTreeMap<String, String>,
    /// `subscriptions.<topic>.<subscription>` overrides.
    pub subscriptions: BTreeMap<String, BTreeMap<String, SubscriptionOverride>>,
    /// Top-level tables other than the common keys: the backends' sections.
    sections: Vec<String>,
    raw: config::Config,
}

#[derive(Deserialize)]
struct Common {
    #[serde(default = "default_backend")]
    backend: String,
    #[serde(default)]
    name_prefix: String,
    #[serde(default)]
    names: BTreeMap<String, String>,
    #[serde(default)]
    subscriptions: BTreeMap<String, BTreeMap<String, SubscriptionOverride>>,
}

/// The top-level keys [`Common`] reads; every other one is a backend section.
const COMMON_KEYS: [&str; 4] = ["backend", "name_prefix", "names", "subscriptions"];

fn default_backend() -> String {
    "local".into()
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_toml("").expect("empty config is valid")
    }
}

impl Settings {
    /// Reads the process environment and the config file it names (or `./tidings.toml` if present).
    pub fn from_env() -> Result<Self> {
        let vars: HashMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        Self::load(vars)
    }

    /// Like [`Settings::from_env`] with an explicit variable map (tests use this instead of the process env).
    pub fn load(vars: HashMap<String, String>) -> Result<Self> {
        let mut b = config::Config::builder();
        match vars.get(CONFIG_PATH_ENV) {
            Some(p) => {
                let path = PathBuf::from(p);
                if !path.is_file() {
                    return Err(Error::config(format!(
                        "config file {} named by {CONFIG_PATH_ENV} does not exist",
                        path.display()
                    )));
                }
                b = b.add_source(file_source(&path).required(true));
            }
            None => b = b.add_source(file_source(Path::new(DEFAULT_CONFIG_FILE)).required(false)),
        }
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(vars.into_iter().filter(|(k, _)| k != CONFIG_PATH_ENV).collect()));
        Self::build(b.add_source(env))
    }

    /// Parses settings from TOML text alone.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::build(config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml)))
    }

    fn build(b: config::ConfigBuilder<config::builder::DefaultState>) -> Result<Self> {
        let raw = b.build().map_err(config_error)?;
        let c: Common = raw.clone().try_deserialize().map_err(config_error)?;
        let table: config::Map<String, config::Value> = raw.clone().try_deserialize().map_err(config_error)?;
        let mut sections = Vec::new();
        for (key, value) in table {
            if COMMON_KEYS.contains(&key.as_str()) {
                continue;
            }
            if value.clone().into_table().is_err() {
                return Err(Error::config(format!(
                    "unknown config key `{key}`: expected one of {} or a backend's section (a table such as [aws])",
                    COMMON_KEYS.join(", ")
                )));
            }
            sections.push(key);
        }
        sections.sort();
        for (logical, cloud) in &c.names {
            validate_name(&format!("names.{logical} override"), cloud)?;
        }
        let s = Settings {
            backend: c.backend.trim().to_ascii_lowercase(),
            name_prefix: c.name_prefix,
            names: c.names,
            subscriptions: c.subscriptions,
            sections,
            raw,
        };
        Ok(s)
    }

    /// The cloud resource name of a logical topic or subscription name: `name_prefix` + (override or name).
    pub fn resource_name(&self, logical: &str) -> String {
        let base = self.names.get(logical).map(String::as_str).unwrap_or(logical);
        format!("{}{}", self.name_prefix, base)
    }

    /// The cloud resource name of a subscription: `name_prefix` + (override of `"<topic>.<subscription>"` or
    /// `<topic>--<subscription>`), so equal subscription names on different topics never collide.
    pub fn subscription_resource_name(&self, topic: &str, subscription: &str) -> String {
        match self.names.get(&format!("{topic}.{subscription}")) {
            Some(base) => format!("{}{}", self.name_prefix, base),
            None => format!("{}{}--{}", self.name_prefix, topic, subscription),
        }
    }

    /// Config overrides for one subscription, if any: keyed by the declared names, or by the same names with `_`
    /// for `-` (environment variables cannot hold `-`).
    pub fn subscription_override(&self, topic: &str, subscription: &str) -> Option<&SubscriptionOverride> {
        let subs = self.subscriptions.get(topic).or_else(|| self.subscriptions.get(&topic.replace('-', "_")))?;
        subs.get(subscription).or_else(|| subs.get(&subscription.replace('-', "_")))
    }

    /// Backend sections present in configuration (top-level tables other than the common keys), such as `aws`.
    pub fn sections(&self) -> &[String] {
        &self.sections
    }

    /// Fails, naming the section and the valid ones, when configuration has a section that is not in `known`.
    pub fn check_sections(&self, known: &[&str]) -> Result<()> {
        match self.sections.iter().find(|s| !known.contains(&s.as_str())) {
            None => Ok(()),
            Some(s) => Err(Error::config(format!(
                "unknown config section [{s}] (env TIDINGS_{}__...): expected a backend's section, one of: {}",
                s.to_ascii_uppercase(),
                known.join(", ")
            ))),
        }
    }

    /// The overrides (as `<topic>.<subscription>`, spelt as configured) matching none of the `declared`
    /// (topic, subscription) pairs.
    pub fn unmatched_overrides(&self, declared: &BTreeSet<(String, String)>) -> Vec<String> {
        let norm = |s: &str| s.replace('_', "-");
        let mut out = Vec::new();
        for (topic, subs) in &self.subscriptions {
            for sub in subs.keys() {
                let hit = declared.iter().any(|(t, s)| *t == norm(topic) && *s == norm(sub));
                if !hit {
                    out.push(format!("{topic}.{sub}"));
                }
            }
        }
        out
    }

    /// Deserializes a backend's section (`[aws]`, `[gcp]`, `[local]`); an absent section deserializes from an empty
    /// table, so a missing required key is reported by name (`aws.region`, env `TIDINGS_AWS__REGION`).
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let value = match self.raw.get::<config::Value>(name) {
            Ok(v) => v,
            Err(config::ConfigError::NotFound(_)) => {
                config::Value::new(None, config::ValueKind::Table(config::Map::new()))
            }
            Err(e) => return Err(config_error(e)),
        };
        value.try_deserialize::<T>().map_err(|e| {
            let env = format!("{ENV_PREFIX}_{}__", name.to_ascii_uppercase());
            let msg = e.to_string();
            let field = msg.split(['`', '"']).nth(1).filter(|_| msg.starts_with("missing"));
            let hint = match field {
                Some(field) => format!(
                    "missing config key `{name}.{field}` (set it in the [{name}] table of {DEFAULT_CONFIG_FILE} or as \
                     {env}{})",
                    field.to_ascii_uppercase()
                ),
                _ => format!("invalid config section [{name}]: {msg} (env prefix {env})"),
            };
            Error::config(hint).with_source(e)
        })
    }
}

/// The error of an override check: each unmatched key and what is declared.
pub(crate) fn unmatched_message(unmatched: &[String], declared: &BTreeSet<(String, String)>) -> String {
    let declared: Vec<String> = declared.iter().map(|(t, s)| format!("{t}.{s}")).collect();
    format!(
        "subscription override{} {} match{} no subscription declared on this bus (declared: {}); check the topic and \
         subscription names (`_` may stand for `-`)",
        if unmatched.len() == 1 { "" } else { "s" },
        unmatched.iter().map(|k| format!("`subscriptions.{k}`")).collect::<Vec<_>>().join(", "),
        if unmatched.len() == 1 { "es" } else { "" },
        if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
    )
}

fn file_source(path: &Path) -> config::File<config::FileSourceFile, config::FileFormat> {
    config::File::from(path).format(config::FileFormat::Toml)
}

fn config_error(e: config::ConfigError) -> Error {
    Error::config(format!("invalid tidings configuration: {e}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_to_local_with_no_prefix() {
        let s = Settings::load(vars(&[])).unwrap();
        assert_eq!(s.backend, "local");
        assert_eq!(s.resource_name("signups"), "signups");
    }

    #[test]
    fn env_overrides_file_and_nested_keys_use_double_underscore() {
        let dir = std::env::temp_dir().join(format!("tidings-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tidings.toml");
        std::fs::write(
            &file,
            "backend = \"gcp\"\nname_prefix = \"dev-\"\n[names]\nsignups = \"user-signups\"\n\
             [subscriptions.signups.email]\nmax_concurrency = 3\nack_deadline = \"45s\"\n",
        )
        .unwrap();
        let s = Settings::load(vars(&[
            ("TIDINGS_CONFIG", file.to_str().unwrap()),
            ("TIDINGS_BACKEND", "aws"),
            ("TIDINGS_SUBSCRIPTIONS__SIGNUPS__EMAIL__MAX_RETRIES", "5"),
        ]))
        .unwrap();
        assert_eq!(s.backend, "aws");
        assert_eq!(s.resource_name("signups"), "dev-user-signups");
        assert_eq!(s.subscription_resource_name("signups", "email"), "dev-signups--email");
        let o = s.subscription_override("signups", "email").unwrap();
        assert_eq!(o.max_concurrency, Some(3));
        assert_eq!(o.ack_deadline, Some(Duration::from_secs(45)));
        assert_eq!(o.max_retries, Some(5));
    }

    #[test]
    fn backlog_limits_parse_and_a_bad_mode_lists_the_valid_ones() {
        let s =
            Settings::from_toml("[subscriptions.signups.email]\nmax_backlog = 500\nwhen_full = \"fail\"\n").unwrap();
        let o = s.subscription_override("signups", "email").unwrap();
        assert_eq!((o.max_backlog, o.when_full), (Some(500), Some(crate::WhenFull::Fail)));
        let c = crate::SubscriptionConfig::DEFAULT.apply(o);
        assert_eq!((c.max_backlog, c.when_full), (Some(500), crate::WhenFull::Fail));
        let e = Settings::from_toml("[subscriptions.signups.email]\nwhen_full = \"drop\"\n").unwrap_err().to_string();
        assert!(e.contains("drop") && e.contains("wait") && e.contains("fail"), "{e}");
    }

    #[test]
    fn missing_config_file_is_named() {
        let e = Settings::load(vars(&[("TIDINGS_CONFIG", "/nonexistent/t.toml")])).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(e.to_string().contains("/nonexistent/t.toml") && e.to_string().contains("TIDINGS_CONFIG"), "{e}");
    }

    #[test]
    fn missing_required_section_key_is_named_with_its_env_var() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Aws {
            region: String,
        }
        let s = Settings::from_toml("backend = \"aws\"").unwrap();
        let e = s.section::<Aws>("aws").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("`aws.region`") && m.contains("TIDINGS_AWS__REGION"), "{m}");
    }

    #[test]
    fn bad_override_value_and_unknown_key_are_errors() {
        let e = Settings::from_toml("[subscriptions.signups.email]\nack_deadline = \"soon\"").unwrap_err();
        assert!(e.to_string().contains("\"soon\"") && e.to_string().contains("ack_deadline"), "{e}");
        let e = Settings::from_toml("[subscriptions.signups.email]\nmax_concurency = 3").unwrap_err();
        assert!(e.to_string().contains("max_concurency"), "{e}");
        let e = Settings::from_toml("[names]\nsignups = \"Bad_Name\"").unwrap_err();
        assert!(e.to_string().contains("Bad_Name"), "{e}");
        let e = Settings::from_toml("name_prefx = \"dev-\"").unwrap_err();
        assert!(e.to_string().contains("unknown config key `name_prefx`"), "{e}");
    }

    #[test]
    fn sections_are_listed_and_an_unknown_one_is_named() {
        let s = Settings::from_toml("[aws]\nregion = \"x\"\n[awz]\nregion = \"y\"").unwrap();
        assert_eq!(s.sections(), ["aws", "awz"]);
        let e = s.check_sections(&["local", "aws", "gcp"]).unwrap_err().to_string();
        assert!(e.contains("[awz]") && e.contains("local, aws, gcp"), "{e}");
        s.check_sections(&["aws", "awz"]).unwrap();
    }

    #[test]
    fn underscores_stand_for_hyphens_and_unmatched_overrides_are_named() {
        let s = Settings::load(vars(&[
            ("TIDINGS_SUBSCRIPTIONS__SIGNUP_EVENTS__EMAIL_SENDER__MAX_CONCURRENCY", "7"),
            ("TIDINGS_SUBSCRIPTIONS__ORDERS__FULFILLMENT__MAX_RETRIES", "1"),
        ]))
        .unwrap();
        assert_eq!(s.subscription_override("signup-events", "email-sender").unwrap().max_concurrency, Some(7));
        let declared: BTreeSet<(String, String)> =
            [("signup-events".into(), "email-sender".into()), ("orders".into(), "fulfilment".into())].into();
        assert_eq!(s.unmatched_overrides(&declared), vec!["orders.fulfillment".to_string()]);
        let m = unmatched_message(&s.unmatched_overrides(&declared), &declared);
        assert!(m.contains("`subscriptions.orders.fulfillment`") && m.contains("orders.fulfilment"), "{m}");
    }
}
