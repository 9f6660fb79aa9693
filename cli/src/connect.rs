//! Builds the bus exactly as an application does (tidings.toml, TIDINGS_*, the cloud's environment), with the
//! global flags as overrides, and refuses the in-memory bus with the reason and what to use instead.

use std::collections::HashMap;

use tidings::admin::Operator;
use tidings::{Bus, Settings};

use crate::args::Cli;
use crate::exit::{Failure, CONFIG};

/// Why a separate process cannot operate the in-memory bus, and what to do instead.
pub const LOCAL_BUS: &str = "the configured backend is the in-memory bus (backend = \"local\", the default when \
TIDINGS_BACKEND is unset): it lives inside each application process, so a separate `tidings` process cannot see its \
topics, subscriptions or dead letters. Point the CLI at a backend whose state lives outside a process with the \
application's own configuration (TIDINGS_BACKEND=aws, gcp, nats, sqlite or postgres, or --backend), or embed the dashboard in the \
application: `tidings::dashboard::router(bus)` serves the same views on the in-memory bus";

/// The settings: the process environment's TIDINGS_* variables, then the flags.
pub fn settings(cli: &Cli) -> Result<Settings, Failure> {
    settings_with(cli, Vec::new())
}

/// The settings with these variables set over the environment's (before the flags).
pub fn settings_with(cli: &Cli, extra: Vec<(String, String)>) -> Result<Settings, Failure> {
    let mut vars: HashMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with(tidings::config::ENV_PREFIX)).collect();
    vars.extend(extra);
    if let Some(c) = &cli.config {
        vars.insert(tidings::config::CONFIG_PATH_ENV.into(), c.clone());
    }
    if let Some(b) = &cli.backend {
        vars.insert("TIDINGS_BACKEND".into(), b.clone());
    }
    if let Some(p) = &cli.prefix {
        vars.insert("TIDINGS_NAME_PREFIX".into(), p.clone());
    }
    let settings = Settings::load(vars)?;
    compiled_in(&settings.backend, &compiled())?;
    Ok(settings)
}

/// Every backend tidings knows, each with whether this binary was built with it (the crate's features of the same
/// names, which are the `tidings` crate's).
fn compiled() -> Vec<(&'static str, bool)> {
    let with = tidings::backends();
    tidings::BACKENDS.iter().map(|name| (*name, with.iter().any(|b| b.name == *name))).collect()
}

/// Whether the backend the settings name keeps its state inside each application process (the in-memory bus),
/// where no other process can reach it.
pub fn in_process(settings: &Settings) -> bool {
    tidings::backend_info(&settings.backend).is_some_and(|b| b.in_process)
}

/// An error naming the feature when `backend` was left out of this build (the in-memory bus is refused elsewhere,
/// with its own reason; a name that is no backend at all is the settings' error).
fn compiled_in(backend: &str, compiled: &[(&str, bool)]) -> Result<(), Failure> {
    if compiled.iter().any(|(name, on)| *name == backend && !on) {
        let with: Vec<&str> = compiled.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect();
        return Err(Failure::new(
            CONFIG,
            format!(
                "the configured backend is {backend:?}, but this tidings binary was built without it (compiled in: \
                 {}): install it with the feature `{backend}`, such as `cargo install tidings-cli --features \
                 {backend}` (the default features include every backend)",
                if with.is_empty() { "none".to_string() } else { with.join(", ") }
            ),
        ));
    }
    Ok(())
}

/// The bus and its operator; an error for the in-memory bus.
pub async fn connect(cli: &Cli) -> Result<(Bus, Operator), Failure> {
    let settings = settings(cli)?;
    if in_process(&settings) {
        return Err(Failure::new(CONFIG, LOCAL_BUS));
    }
    let bus = tidings::from_settings(settings).await?;
    let op = Operator::new(&bus);
    if !op.has_admin() {
        return Err(Failure::new(
            CONFIG,
            format!(
                "the {} backend offers no operator access (tidings_core::admin::Admin), so the CLI cannot work on it",
                bus.backend_name()
            ),
        ));
    }
    Ok((bus, op))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_backend_left_out_of_the_build_is_refused_naming_its_feature() {
        let sqlite_only = [("aws", false), ("gcp", false), ("nats", false), ("sqlite", true), ("postgres", false)];
        let e = super::compiled_in("gcp", &sqlite_only).unwrap_err();
        assert_eq!(e.code, crate::exit::CONFIG);
        assert!(
            e.message.contains("built without it (compiled in: sqlite)")
                && e.message.contains("`cargo install tidings-cli --features gcp`"),
            "{}",
            e.message
        );
        assert!(super::compiled_in("sqlite", &sqlite_only).is_ok());
        assert!(super::compiled_in("local", &sqlite_only).is_ok(), "refused later, with the in-memory bus's reason");
        assert!(super::compiled_in("typo", &sqlite_only).is_ok(), "the settings name it");
    }
}
