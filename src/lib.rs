//! **tidings**: Pub/Sub as a native building block for Rust services. Declare typed topics and subscriptions in a
//! few lines; get one set of semantics (at-least-once or exactly-once delivery, retries with exponential backoff, a
//! dead-letter queue per subscription, ordering keys, ack deadlines with lease extension, a concurrency limit,
//! graceful shutdown) on every backend. The backend is chosen by configuration, so the same code runs on a laptop
//! (the in-memory bus, the default) and in the cloud.
//!
//! ```
//! use std::time::Duration;
//!
//! use serde::{Deserialize, Serialize};
//! use tidings::{Message, SubscriptionConfig, Topic, TopicConfig};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct SignupEvent { pub user_id: u64 }
//!
//! pub static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tidings::Result<()> {
//! // The backend the configuration names (tidings.toml, TIDINGS_* variables); with none, the in-memory bus.
//! let bus = tidings::from_env().await?;
//! let email = bus.subscribe(&SIGNUPS, "email", SubscriptionConfig::default(), |m: Message<SignupEvent>| async move {
//!     println!("welcome, user {}", m.user_id);
//!     Ok(()) // acks; an Err is retried with backoff, then moved to the subscription's dead-letter queue
//! }).await?;
//! SIGNUPS.publish(&bus, &SignupEvent { user_id: 42 }).await?;
//! # assert!(email.wait_idle(Duration::from_secs(5)).await?, "the handler acked the signup");
//! bus.shutdown(Duration::from_secs(5)).await; // handlers still running get up to 5 s to finish
//! # Ok(()) }
//! ```
//!
//! The book (`docs/book` in the repository) is the manual: concepts and the semantics table, configuration, one page
//! per backend, the outbox, observability, the CLI, the dashboard and testing. Start with [`from_env`], [`Topic`],
//! [`Bus::subscribe`], and `tidings::testing` (feature `local`, on by default) for a bus in an application's unit
//! tests.
#![deny(missing_docs)]

pub use tidings_core::metrics;
pub use tidings_core::topology;
pub use tidings_core::trace;
pub use tidings_core::{
    admin, backend, book, config, dead_letter, handler, layer, message, retry, subscription, topic, validate_name,
    Attributes, Backend, BacklogDetail, BatchHandler, BatchOutcome, BatchResult, Bus, BusBuilder, Capabilities,
    DeadLetter, DeliveryGuarantee, Error, ErrorKind, Handler, HandlerError, HandlerResult, Layer, Message, MessageId,
    Metadata, PublishOptions, Result, RetryPolicy, Settings, Subscription, SubscriptionConfig, SubscriptionOverride,
    Topic, TopicConfig, Topology, WhenFull,
};

#[cfg(feature = "opentelemetry")]
pub mod otel;

#[cfg(feature = "local")]
pub use tidings_local as local;

#[cfg(feature = "aws")]
pub use tidings_aws as aws;

#[cfg(feature = "gcp")]
pub use tidings_gcp as gcp;

#[cfg(feature = "nats")]
pub use tidings_nats as nats;

/// The durable SQL backends (features `sqlite`, `postgres`), and `publish_in` for the application's transaction.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use tidings_sql as sql;

/// The transactional inbox (features `sqlite`, `postgres`): a handler's database effects happen once per message.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use tidings_inbox as inbox;

#[cfg(feature = "dashboard")]
pub use tidings_dashboard as dashboard;

use std::sync::Arc;

use tidings_core::backend::BackendInfo;

/// The backends: one line each (its name, which is also its Cargo feature; its [`BackendInfo`]; how to open it from
/// the settings). Adding a backend is its own crate, its feature, and one line here: the CLI, the dashboard and
/// tracing read everything else from its `BackendInfo`.
macro_rules! registry {
    ($($name:literal => $info:expr, |$s:ident| $open:expr;)*) => {
        /// Backend names accepted in `backend` / `TIDINGS_BACKEND`, whether this build includes them or not.
        pub const BACKENDS: &[&str] = &[$($name),*];

        /// The backends this build includes (the Cargo features of the same names), with their names and pricing.
        #[allow(clippy::vec_init_then_push)]
        pub fn backends() -> Vec<BackendInfo> {
            #[allow(unused_mut)]
            let mut v = Vec::new();
            $(#[cfg(feature = $name)] v.push($info);)*
            v
        }

        /// The backend the settings name, where this build includes it.
        async fn open(settings: &Settings) -> Option<Result<Arc<dyn Backend>>> {
            match settings.backend.as_str() {
                $(#[cfg(feature = $name)] $name => {
                    let $s = settings;
                    Some($open.map(|b| Arc::new(b) as Arc<dyn Backend>))
                })*
                _ => None,
            }
        }
    };
}

registry! {
    "local" => tidings_local::info(), |s| tidings_local::LocalBackend::from_settings(s);
    "aws" => tidings_aws::info(), |s| tidings_aws::AwsBackend::from_settings(s).await;
    "gcp" => tidings_gcp::info(), |s| tidings_gcp::GcpBackend::from_settings(s).await;
    "nats" => tidings_nats::info(), |s| tidings_nats::NatsBackend::from_settings(s).await;
    "sqlite" => tidings_sql::info("sqlite"), |s| tidings_sql::SqlBackend::from_settings(s).await;
    "postgres" => tidings_sql::info("postgres"), |s| tidings_sql::SqlBackend::from_settings(s).await;
}

/// The [`BackendInfo`] of a backend this build includes, by name.
pub fn backend_info(name: &str) -> Option<BackendInfo> {
    backends().into_iter().find(|b| b.name == name)
}

/// Builds the bus the configuration names: defaults < `tidings.toml` (or the file `TIDINGS_CONFIG` names) <
/// `TIDINGS_*` environment variables. With nothing configured, this is the in-memory bus.
pub async fn from_env() -> Result<Bus> {
    from_settings(Settings::from_env()?).await
}

/// Builds the bus these settings name.
pub async fn from_settings(settings: Settings) -> Result<Bus> {
    settings.check_sections(BACKENDS)?;
    let backend = match open(&settings).await {
        Some(opened) => opened?,
        None if BACKENDS.contains(&settings.backend.as_str()) => {
            let with: Vec<String> = backends().into_iter().map(|b| b.name.into_owned()).collect();
            return Err(Error::config(format!(
                "config key `backend` (TIDINGS_BACKEND) is {:?}, but this build of tidings does not include it: \
                 enable the Cargo feature `{}` of the `tidings` crate (compiled in: {})",
                settings.backend,
                settings.backend,
                if with.is_empty() { "none".to_string() } else { with.join(", ") }
            )));
        }
        None => {
            return Err(Error::config(format!(
                "config key `backend` (TIDINGS_BACKEND) is {:?}, which is not a tidings backend; expected one of: {}",
                settings.backend,
                BACKENDS.join(", ")
            )))
        }
    };
    tracing::info!(backend = backend.name(), prefix = %settings.name_prefix, "tidings bus ready");
    Ok(Bus::builder(backend).settings(settings).build())
}

/// A fresh in-memory bus with default settings, whatever the environment says.
#[cfg(feature = "local")]
pub fn local() -> Bus {
    Bus::new(Arc::new(tidings_local::LocalBackend::new()))
}

#[cfg(feature = "local")]
pub mod testing;

// The book's pages as doc tests (src/book_pages.rs), with the features the test command builds.
#[cfg(all(doctest, feature = "aws", feature = "gcp", feature = "nats", feature = "sqlite", feature = "postgres"))]
mod book_pages;
