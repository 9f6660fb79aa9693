//! The backend contract, in one place: everything a backend implements and everything it is handed.
//!
//! A backend is a narrow, batch-oriented driver that never retries; the portable layer ([`crate::Bus`] and the
//! runtime) owns encoding, validation, dispatch, concurrency, backoff, attempt counting, dead-letter decisions, lease
//! extension, ordering where the broker lacks it, and shutdown.
//!
//! | file | what it holds |
//! |---|---|
//! | `driver.rs` | the three traits: [`Backend`] (provisioning, capabilities, operator access), [`TopicDriver`], [`SubscriptionDriver`] |
//! | `capabilities.rs` | [`Capabilities`]: what a backend does natively |
//! | `spec.rs` | [`TopicSpec`], [`SubscriptionSpec`]: what the backend is asked to provision |
//! | `delivery.rs` | [`OutgoingMessage`], [`PublishReport`], [`ReceivedMessage`], [`AckId`], [`DeadLetterRequest`] |
//! | `dead_letters.rs` | [`DeadLetters`]: a subscription's dead-letter queue (read with a cursor, restore, delete), the one surface for the `Subscription` handle and the operator |
//! | `info.rs` | [`BackendInfo`]: its name, OpenTelemetry `messaging.system` and how its API calls are billed |
//! | `admin.rs` | [`Admin`]: the operator's contract (CLI, dashboard) |
//! | `backlog.rs` | [`BacklogDetail`]: a subscription's backlog with its scheduled messages apart |
//! | `check.rs`, `orphan.rs` | what `tidings doctor` and the inventory report |
//! | `calls/` | [`calls::ApiCalls`]: counting a backend's API calls by operation, topic and subscription |
//! | `cloud.rs` | [`cloud::Provisioning`]: create, verify or trust a cloud backend's resources |
//! | `wire.rs`, `time.rs` | tidings' metadata on the wire, and the time conversions it uses |
//! | `dedup.rs` | [`dedup::SeenIds`]: a time-windowed id set, for exactly-once where the broker lacks it |
//!
//! The test kit (`tidings-testkit`) holds a small reference backend written to be read, and the conformance suite
//! every backend passes.

pub mod admin;
mod backlog;
pub mod calls;
mod capabilities;
mod check;
pub mod cloud;
pub mod dead_letters;
pub mod dedup;
mod delivery;
mod driver;
mod info;
mod orphan;
mod spec;
pub mod time;
pub mod wire;

pub use admin::Admin;
pub use backlog::BacklogDetail;
pub use capabilities::Capabilities;
pub use check::{Check, Status};
pub use dead_letters::{DeadLetter, DeadLetters, HeldLetter, LetterPage};
pub use delivery::{AckId, DeadLetterRequest, OutgoingMessage, PublishReport, ReceivedMessage};
pub use driver::{Backend, SubscriptionDriver, TopicDriver};
pub use info::{BackendInfo, Billed, Priced};
pub use orphan::Orphan;
pub use spec::{SubscriptionSpec, TopicSpec};
