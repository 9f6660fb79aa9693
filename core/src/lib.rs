//! Core of tidings: typed topics and subscriptions, the backend SPI, the runtime that runs handlers the same way on
//! every backend, and configuration.
//!
//! Applications use the `tidings` facade crate, which re-exports these items and adds the backends and
//! `tidings::from_env`; backend authors implement [`Backend`], [`TopicDriver`] and [`SubscriptionDriver`], and run
//! the behaviour suite every backend must pass (`tidings_testkit::conformance`, in the `tidings-testkit` crate, which
//! uses only this crate's public items) from their tests.
//!
//! The split: a backend only moves bytes (publish a batch, receive a batch, ack, nack, extend a lease) and declares
//! its [`Capabilities`]; the [`Bus`] built on it does everything else on every backend alike: encoding, validation,
//! handler concurrency, retries with backoff, lease extension, the dead-letter queue, ordering where the backend has
//! none, metrics, tracing and shutdown. So any `Arc<dyn Backend>` becomes a full bus:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tidings_core::{Backend, Bus, Message, SubscriptionConfig, Topic, TopicConfig};
//!
//! static ORDERS: Topic<u32> = Topic::new("orders", TopicConfig::at_least_once());
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tidings_core::Result<()> {
//! // Any backend will do; this is the in-memory one, which `tidings::local()` wraps the same way.
//! let backend: Arc<dyn Backend> = Arc::new(tidings::local::LocalBackend::new());
//! let bus = Bus::builder(backend).build();
//! // What the bus offers is the backend's own capabilities, completed by core: ordering keys work everywhere.
//! assert!(bus.capabilities().ordering);
//!
//! let (seen, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let billing = bus
//!     .subscribe(&ORDERS, "billing", SubscriptionConfig::default(), move |m: Message<u32>| {
//!         let seen = seen.clone();
//!         async move {
//!             seen.send(*m).expect("the example is listening");
//!             Ok(()) // acks; an Err would be retried with backoff, then dead-lettered
//!         }
//!     })
//!     .await?;
//! ORDERS.publish(&bus, &7).await?;
//! assert_eq!(rx.recv().await, Some(7));
//! assert!(billing.wait_idle(Duration::from_secs(5)).await?); // acked: nothing left in its backlog
//! bus.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod admin;
pub mod backend;
pub mod book;
mod bus;
pub mod config;
pub mod dead_letter;
mod error;
pub mod handler;
pub mod layer;
pub mod message;
pub mod metrics;
mod name;
mod publish;
pub mod retry;
mod runtime;
pub mod subscription;
pub mod topic;
pub mod topology;
pub mod trace;

pub use backend::{Backend, BacklogDetail, Capabilities, PublishReport, SubscriptionDriver, TopicDriver};
pub use bus::{Bus, BusBuilder};
pub use config::Settings;
pub use dead_letter::DeadLetter;
pub use error::{Error, ErrorKind, Result};
pub use handler::{BatchHandler, BatchOutcome, BatchResult, Handler, HandlerError, HandlerResult};
pub use layer::Layer;
pub use message::{Attributes, Message, MessageId, Metadata, PublishOptions, MAX_ID_LEN};
pub use name::{validate_name, MAX_NAME_LEN};
pub use retry::RetryPolicy;
pub use runtime::Subscription;
pub use subscription::{SubscriptionConfig, SubscriptionOverride, WhenFull};
pub use topic::{DeliveryGuarantee, Topic, TopicConfig};
pub use topology::Topology;
