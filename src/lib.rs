//! **tidings**: Pub/Sub as a native building block for Rust services. Declare typed topics and subscriptions in a
//! few lines; get one set of semantics (at-least-once or exactly-once delivery, retries with exponential backoff, a
//! dead-letter queue per subscription, ordering keys, ack deadlines with lease extension, a concurrency limit,
//! graceful shutdown) on every backend. The backend is chosen by configuration, so the same code runs on a laptop
//! (the in-memory bus, the default) and in the cloud.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tidings::{Message, SubscriptionConfig, Topic, TopicConfig};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct SignupEvent { pub user_id: u64 }
//!
//! pub static SIGNUPS: Topic<SignupEvent> = Topic::new("signups", TopicConfig::at_least_once());
//!
//! # async fn demo() -> tidings::Result<()> {
//! let bus = tidings::from_env().await?;
//! bus.subscribe(&SIGNUPS, "email", SubscriptionConfig::default(), |m: Message<SignupEvent>| async move {
//!     println!("welcome, user {}", m.user_id);
//!     Ok(())
//! }).await?;
//! SIGNUPS.publish(&bus, &SignupEvent { user_id: 42 }).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub use tidings_core::metrics;
pub use tidings_core::topology;
pub use tidings_core::trace;
pub use tidings_core::{
    admin, backend, cloud, config, dead_letter, handler, layer, message, retry, subscription, topic, validate_name,
    wire, Attributes, Backend, Bus, BusBuilder, Capabilities, DeadLetter, DeliveryGuarantee, Error, ErrorKind, Handler,
    HandlerError, HandlerResult, Layer, Message, MessageId, Metadata, PublishOptions, Result, RetryPolicy, Settings,
    Subscription, SubscriptionConfig, SubscriptionOverride, Topic, TopicConfig, Topology, WhenFull,
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

#[cfg(feature = "dashboard")]
pub use tidings_dashboard as dashboard;

use std::sync::Arc;

/// Backend names accepted in `backend` / `TIDINGS_BACKEND`.
pub const BACKENDS: &[&str] = &["local", "aws", "gcp", "nats", "sqlite", "postgres"];

/// Builds the bus the configuration names: defaults < `tidings.toml` (or the file `TIDINGS_CONFIG` names) <
/// `TIDINGS_*` environment variables. With nothing configured, this is the in-memory bus.
pub async fn from_env() -> Result<Bus> {
    from_settings(Settings::from_env()?).await
}

/// Builds the bus these settings name.
pub async fn from_settings(settings: Settings) -> Result<Bus> {
    settings.check_sections(BACKENDS)?;
    let backend: Arc<dyn Backend> = match settings.backend.as_str() {
        #[cfg(feature = "local")]
        "local" => Arc::new(tidings_local::LocalBackend::from_settings(&settings)?),
        #[cfg(feature = "aws")]
        "aws" => Arc::new(tidings_aws::AwsBackend::from_settings(&settings).await?),
        #[cfg(feature = "gcp")]
        "gcp" => Arc::new(tidings_gcp::GcpBackend::from_settings(&settings).await?),
        #[cfg(feature = "nats")]
        "nats" => Arc::new(tidings_nats::NatsBackend::from_settings(&settings).await?),
        #[cfg(feature = "sqlite")]
        "sqlite" => Arc::new(tidings_sql::SqlBackend::from_settings(&settings).await?),
        #[cfg(feature = "postgres")]
        "postgres" => Arc::new(tidings_sql::SqlBackend::from_settings(&settings).await?),
        name if BACKENDS.contains(&name) => {
            return Err(Error::config(format!(
                "config key `backend` (TIDINGS_BACKEND) is {name:?}, but this build of tidings does not include it: \
                 enable the Cargo feature `{name}` of the `tidings` crate (compiled in: {})",
                compiled_in().join(", ")
            )))
        }
        other => {
            return Err(Error::config(format!(
                "config key `backend` (TIDINGS_BACKEND) is {other:?}, which is not a tidings backend; expected one of: \
                 {}",
                BACKENDS.join(", ")
            )))
        }
    };
    tracing::info!(backend = backend.name(), prefix = %settings.name_prefix, "tidings bus ready");
    Ok(Bus::builder(backend).settings(settings).build())
}

fn compiled_in() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "local") {
        v.push("local");
    }
    if cfg!(feature = "aws") {
        v.push("aws");
    }
    if cfg!(feature = "gcp") {
        v.push("gcp");
    }
    if cfg!(feature = "nats") {
        v.push("nats");
    }
    if cfg!(feature = "sqlite") {
        v.push("sqlite");
    }
    if cfg!(feature = "postgres") {
        v.push("postgres");
    }
    if v.is_empty() {
        v.push("none");
    }
    v
}

/// A fresh in-memory bus with default settings, whatever the environment says.
#[cfg(feature = "local")]
pub fn local() -> Bus {
    Bus::new(Arc::new(tidings_local::LocalBackend::new()))
}

#[cfg(feature = "local")]
pub mod testing;
