//! Command-line arguments.

use clap::{Args, Parser, Subcommand};

/// Operate tidings topics, subscriptions and dead letters on the backend the configuration names (tidings.toml,
/// TIDINGS_* and the cloud's own environment, exactly as the application reads them).
#[derive(Debug, Parser)]
#[command(name = "tidings", version, after_help = crate::exit::help())]
pub struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Config file (default ./tidings.toml; same as TIDINGS_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<String>,
    /// Backend (same as TIDINGS_BACKEND).
    #[arg(long, global = true)]
    pub backend: Option<String>,
    /// Name prefix (same as TIDINGS_NAME_PREFIX).
    #[arg(long, global = true, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Prints backend errors in full, with the cloud SDK's details after their first sentence.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Topics and subscriptions under the name prefix, with backlog (and, of it, the messages scheduled for later),
    /// in-flight, oldest unacked age and DLQ depth; a subscription whose resource is gone is marked MISSING (exit code
    /// 0: the listing is complete), and resources left behind by a deleted subscription are listed as orphaned.
    Ls,
    /// Dead-letter queues: list, show, redrive, purge.
    #[command(subcommand)]
    Dlq(Dlq),
    /// Publishes one message.
    Publish(Publish),
    /// Serves the dashboard page: topology, backlog and DLQ depth per subscription, dead letters by reason.
    Dashboard(DashboardArgs),
    /// Checks reachability, credentials, the resources and settings of the application's topology (--topology
    /// FILE), and the permissions it needs; prints pass, fail or skipped with the reason for each.
    Doctor(Doctor),
    /// Prints a shell completion script: `tidings completions bash > /etc/bash_completion.d/tidings`, or zsh, fish.
    Completions {
        /// bash, zsh, fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Prints messages published to a topic, through a temporary subscription removed on exit (Ctrl-C included).
    Tail(Tail),
    /// Estimated monthly bill per topic and subscription from the application's API-call and byte counters.
    Cost(crate::cost::CostArgs),
}

#[derive(Debug, Subcommand)]
pub enum Dlq {
    /// Lists dead letters of a subscription.
    Ls(DlqLs),
    /// Shows one dead letter: payload pretty-printed, attributes, attempts, reason, times.
    /// `dlq show ID` searches every subscription; `dlq show TOPIC SUBSCRIPTION ID` one.
    Show {
        /// [TOPIC SUBSCRIPTION] ID
        #[arg(num_args = 1..=3, required = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Moves dead letters back into their subscription (attempt counter reset); asks nothing (it deletes nothing).
    Redrive(Redrive),
    /// Deletes dead letters for good (asks first; --yes does not).
    Purge(Purge),
}

#[derive(Debug, Args)]
pub struct Target {
    /// Topic (logical name, as in code).
    pub topic: String,
    /// Subscription (logical name).
    pub subscription: String,
}

#[derive(Debug, Args)]
pub struct Filters {
    /// Only dead letters dead-lettered within this long, such as 1h or 30m.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<humantime::Duration>,
    /// Only dead letters whose payload, reason or attributes match this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<String>,
}

#[derive(Debug, Args)]
pub struct DlqLs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub filters: Filters,
    /// Groups by `reason` (counts, oldest and newest per reason).
    #[arg(long, value_name = "FIELD", value_parser = ["reason"])]
    pub group_by: Option<String>,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct Action {
    #[command(flatten)]
    pub target: Target,
    /// These dead letters (repeatable).
    #[arg(long = "id", value_name = "ID", conflicts_with_all = ["reason", "all"])]
    pub ids: Vec<String>,
    /// Dead letters whose reason matches this regular expression.
    #[arg(long, value_name = "REGEX", conflicts_with = "all")]
    pub reason: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub filters: Filters,
    /// Shows what would be done, does nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At most this many messages a second, such as 50 or 50/s.
    #[arg(long, value_name = "N/s")]
    pub rate: Option<String>,
}

#[derive(Debug, Args)]
pub struct Redrive {
    #[command(flatten)]
    pub action: Action,
    /// Not an option of redrive, which asks no confirmation: refused with the reason (it confirms a purge).
    #[arg(long, short, hide = true)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct Purge {
    #[command(flatten)]
    pub action: Action,
    /// Does not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct Publish {
    /// Topic (logical name).
    pub topic: String,
    /// The payload: JSON text, or @FILE to read it from a file (@- for stdin).
    #[arg(long)]
    pub data: String,
    /// An attribute, k=v (repeatable).
    #[arg(long = "attr", value_name = "K=V")]
    pub attrs: Vec<String>,
    /// Ordering key (ordered topics).
    #[arg(long)]
    pub key: Option<String>,
    /// Message id (default: a new one); exactly-once topics drop a republished id.
    #[arg(long)]
    pub id: Option<String>,
    /// Delivers it this long from now, such as 10m or 1h30m (delayed delivery).
    #[arg(long, value_name = "DURATION", conflicts_with = "at")]
    pub delay: Option<String>,
    /// Delivers it at this time, RFC 3339 in UTC, such as 2025-06-01T09:00:00Z (delayed delivery).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct Tail {
    /// Topic (logical name).
    pub topic: String,
    /// Stops after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct Doctor {
    /// The application's topology: the JSON of `serde_json::to_string(&bus.topology())`.
    #[arg(long, value_name = "FILE")]
    pub topology: Option<String>,
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to listen on; beyond loopback it needs a token.
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    pub listen: String,
    /// Also answers requests naming this host (repeatable): a name it is reached under, such as dash.example.com,
    /// dash.example.com:8443, .example.com (the domain and its subdomains) or * (any host: behind a proxy that
    /// checks Host). Otherwise only the listen address's names are answered (on loopback: localhost, 127.0.0.1 and
    /// the IPv6 loopback ::1, each with the port), a guard against DNS rebinding.
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<tidings::dashboard::AllowedHost>,
    /// Allows redrive and purge from the page.
    #[arg(long)]
    pub allow_actions: bool,
    /// Requires this bearer token on every API call (visible to `ps`; prefer --token-file).
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Reads the token from this file.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<String>,
    /// The application's metrics (a Prometheus scrape URL, or a file holding one), read at each refresh: rates,
    /// cost per subscription, in-flight handlers and handler latency.
    #[arg(long, value_name = "URL|FILE")]
    pub metrics: Option<String>,
}
