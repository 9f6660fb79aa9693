//! `tidings doctor`: is the backend reachable with these credentials, does it hold the resources the application's
//! topology declares with the declared settings (provisioning drift: resource, setting, both values), and does the
//! application's identity hold the permissions it needs. Every check prints pass, fail or skipped with the reason.
//! Nothing is created or received: the backend is opened with `provisioning = "verify"`.

use std::io::IsTerminal;
use std::time::Duration;

use tidings::admin::{Check, Operator, Status};
use tidings::backend::{SubscriptionSpec, TopicSpec};
use tidings::topology::{Topology, TopologySubscription, TopologyTopic};
use tidings::{ErrorKind, Settings};

use crate::args::{Cli, Doctor};
use crate::connect::{settings, settings_with, LOCAL_BUS};
use crate::exit::{Failure, Outcome, CONFIG, DOCTOR};
use crate::table;

pub async fn run(cli: &Cli, a: &Doctor, json: bool) -> Outcome {
    let mut checks = Vec::new();
    let base = settings(cli)?;
    if crate::connect::in_process(&base) {
        return Err(Failure::new(CONFIG, LOCAL_BUS));
    }
    checks.push(Check::pass("configuration", format!("backend {}, name prefix {:?}", base.backend, base.name_prefix)));
    let declared = match &a.topology {
        Some(path) => match read_topology(path) {
            Ok(t) => {
                checks.push(topology_matches(path, &t, &base));
                Some(t)
            }
            Err(e) => {
                checks.push(Check::fail(format!("topology {path}"), e));
                None
            }
        },
        None => None,
    };
    diagnose(cli, &base, declared, &mut checks).await;
    // A cloud SDK's debug dump after an error's sentence only with --verbose.
    for c in &mut checks {
        c.detail = crate::exit::detail(&c.detail, cli.verbose);
    }
    report(&checks, json);
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        let page = tidings::book::backend_page(&base.backend).unwrap_or(tidings::book::PRODUCTION);
        return Err(Failure::new(
            DOCTOR,
            format!(
                "{failed} of {} check(s) failed (permissions and provisioning: {})",
                checks.len(),
                tidings::book::url(page)
            ),
        ));
    }
    Ok(())
}

fn read_topology(path: &str) -> Result<Topology, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{path} is not a topology (the JSON of `serde_json::to_string(&bus.topology())`): {e}"))
}

fn topology_matches(path: &str, t: &Topology, s: &Settings) -> Check {
    let name = format!("topology {path}");
    let subs: usize = t.topics.iter().map(|t| t.subscriptions.len()).sum();
    if t.backend != s.backend {
        return Check::fail(
            name,
            format!(
                "it was written by a bus on backend {:?}, but the CLI is configured for {:?}",
                t.backend, s.backend
            ),
        );
    }
    let prefix = if t.name_prefix == s.name_prefix {
        String::new()
    } else {
        format!(
            " (its name prefix {:?} differs from the CLI's {:?}; its resource names are checked)",
            t.name_prefix, s.name_prefix
        )
    };
    Check::pass(name, format!("{} topic(s), {subs} subscription(s){prefix}", t.topics.len()))
}

/// The settings with `<backend>.provisioning = "verify"` (when `always`, or for the SQL backends, which would create
/// their tables on opening otherwise), so opening and checking creates nothing.
fn verifying(cli: &Cli, backend: &str, always: bool) -> Result<Settings, Failure> {
    let key = format!("TIDINGS_{}__PROVISIONING", backend.to_uppercase());
    let info = tidings::backend_info(backend);
    let verify = info.is_some_and(|b| b.provisioning && (always || b.provisions_on_open));
    let extra = if verify { vec![(key, "verify".into())] } else { Vec::new() };
    settings_with(cli, extra)
}

async fn diagnose(cli: &Cli, base: &Settings, declared: Option<Topology>, checks: &mut Vec<Check>) {
    // The application's provisioning mode (permissions depend on it); SQL opens in verify mode.
    let settings = match verifying(cli, &base.backend, false) {
        Ok(s) => s,
        Err(f) => return checks.push(Check::fail("configuration", f.message)),
    };
    let bus = match tidings::from_settings(settings).await {
        Ok(b) => b,
        Err(e) => {
            checks.push(Check::fail("connection", e.to_string()));
            checks.push(Check::skipped("everything else", "the backend could not be opened"));
            return;
        }
    };
    let op = Operator::new(&bus);
    let listed = match op.subscription_names().await {
        Ok(names) => {
            let topics = names.iter().map(|(t, _)| t).collect::<std::collections::BTreeSet<_>>().len();
            checks.push(Check::pass(
                "reachability and credentials",
                format!(
                    "listed {} subscription(s) of {topics} topic(s) under the name prefix {:?}",
                    names.len(),
                    base.name_prefix
                ),
            ));
            Some(names)
        }
        Err(e) => {
            checks.push(Check::fail("reachability and credentials", e.to_string()));
            None
        }
    };
    if listed.is_some() {
        orphans(&op, checks).await;
    }
    let topology = match declared {
        Some(t) => {
            match verifying(cli, &base.backend, true) {
                Err(f) => checks.push(Check::fail("configuration (verify mode)", f.message)),
                Ok(s) => match tidings::from_settings(s).await {
                    Err(e) => checks.push(Check::fail("connection (verify mode)", e.to_string())),
                    Ok(verify) => {
                        resources(&verify, &Operator::new(&verify), &t, checks).await;
                        verify.shutdown(Duration::from_secs(5)).await;
                    }
                },
            }
            t
        }
        None => {
            checks.push(Check::skipped(
                "resources and drift",
                "no --topology FILE: write the application's with `serde_json::to_string(&bus.topology())` to check \
                 its topics and subscriptions and their settings",
            ));
            listed_topology(base, listed.unwrap_or_default())
        }
    };
    checks.extend(op.permissions(&topology).await);
    bus.shutdown(Duration::from_secs(5)).await;
}

/// One failed check per resource a deleted subscription left behind (not the application's topics or subscriptions).
async fn orphans(op: &Operator, checks: &mut Vec<Check>) {
    const NAME: &str = "left-behind resources";
    match op.orphans().await {
        Ok(found) if found.is_empty() => {
            checks.push(Check::pass(NAME, "none: every dead-letter resource under the prefix has its subscription"))
        }
        Ok(found) => checks
            .extend(found.iter().map(|o| Check::fail(format!("orphaned {} {}", o.kind, o.resource), o.describe()))),
        Err(e) => checks.push(Check::skipped(NAME, format!("cannot list them: {e}"))),
    }
}

/// What the listing shows, as a topology (default settings): what the permission checks look at without a file.
fn listed_topology(s: &Settings, names: Vec<(String, String)>) -> Topology {
    let mut topics: Vec<TopologyTopic> = Vec::new();
    for (topic, sub) in names {
        if topics.last().is_none_or(|t| t.name != topic) {
            let resource = s.resource_name(&topic);
            topics.push(TopologyTopic::new(&topic, resource, tidings::TopicConfig::at_least_once()));
        }
        let t = topics.last_mut().expect("pushed");
        let resource = s.subscription_resource_name(&topic, &sub);
        t.subscriptions.push(TopologySubscription::new(&sub, resource, &tidings::SubscriptionConfig::default()));
    }
    Topology { backend: s.backend.clone(), name_prefix: s.name_prefix.clone(), topics }
}

/// One check per declared topic and subscription: present, with the declared settings.
async fn resources(bus: &tidings::Bus, op: &Operator, t: &Topology, checks: &mut Vec<Check>) {
    for topic in &t.topics {
        let spec = TopicSpec::new(topic.name.clone(), topic.resource.clone(), topic.config());
        let name = format!("topic {} ({})", topic.name, topic.resource);
        checks.push(match bus.backend().topic(&spec).await {
            Ok(_) => Check::pass(name, "exists with the declared settings"),
            Err(e) => drift(name, e),
        });
        for sub in &topic.subscriptions {
            let s = SubscriptionSpec::new(spec.clone(), sub.name.clone(), sub.resource.clone(), sub.config());
            let name = format!("subscription {}/{} ({})", topic.name, sub.name, sub.resource);
            checks.push(match op.provisioned(&s).await {
                Ok(()) => Check::pass(name, "exists with its dead-letter queue; the settings the backend keeps match"),
                Err(e) => drift(name, e),
            });
        }
    }
}

fn drift(name: String, e: tidings::Error) -> Check {
    match e.kind() {
        ErrorKind::NotFound => Check::fail(name, format!("missing: {e}")),
        ErrorKind::Mismatch => Check::fail(name, format!("drift: {e}")),
        ErrorKind::Unsupported => Check::skipped(name, e.to_string()),
        _ => Check::fail(name, e.to_string()),
    }
}

fn report(checks: &[Check], json: bool) {
    if json {
        let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
        table::json(&serde_json::json!({ "checks": checks, "failed": failed }));
        return;
    }
    let color = table::color() && std::io::stdout().is_terminal();
    for c in checks {
        let (word, code) = match c.status {
            Status::Pass => ("pass", "32"),
            Status::Fail => ("FAIL", "31"),
            Status::Skipped => ("skip", "33"),
        };
        let word = if color { format!("\x1b[{code}m{word}\x1b[0m") } else { word.to_string() };
        println!("{word}  {}: {}", c.name, c.detail);
    }
}
