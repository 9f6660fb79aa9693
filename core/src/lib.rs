//! Core of tidings: typed topics and subscriptions, the backend SPI, the runtime that runs handlers the same way on
//! every backend, and configuration.
//!
//! Applications use the `tidings` facade crate; backend authors implement [`Backend`], [`TopicDriver`] and
//! [`SubscriptionDriver`], and run the behaviour suite every backend must pass (`tidings_testkit::conformance`, in the
//! `tidings-testkit` crate, which uses only this crate's public items) from their tests.
#![warn(missing_docs)]

pub mod admin;
pub mod backend;
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

pub use backend::{Backend, Capabilities, PublishReport, SubscriptionDriver, TopicDriver};
pub use bus::{Bus, BusBuilder};
pub use config::Settings;
pub use dead_letter::DeadLetter;
pub use error::{Error, ErrorKind, Result};
pub use handler::{Handler, HandlerError, HandlerResult};
pub use layer::Layer;
pub use message::{Attributes, Message, MessageId, Metadata, PublishOptions, MAX_ID_LEN};
pub use name::{validate_name, MAX_NAME_LEN};
pub use retry::RetryPolicy;
pub use runtime::Subscription;
pub use subscription::{SubscriptionConfig, SubscriptionOverride, WhenFull};
pub use topic::{DeliveryGuarantee, Topic, TopicConfig};
pub use topology::Topology;
