//! The test kit for tidings backends, taken as a dev-dependency by every backend crate.
//!
//! - The [conformance suite](mod@conformance): the behaviour every backend must show, generic over the backend
//!   through a [`Harness`](conformance::Harness) and run in full by one [`conformance_tests!`] call in a backend's
//!   tests. It is written against the public API of `tidings-core` only, as a backend author's own tests would be.
//!   Its helpers (a capturing trace layer, a metrics recorder, a fault-injecting TCP proxy, the foreign-producer probe
//!   and the operator story) serve the backends' other tests too.
//! - The [reference backend](mod@reference): a complete backend in one short file, in memory, that passes the
//!   conformance suite and is written to be read by someone about to write their first backend. Its module page walks
//!   through the contract (`Backend`, `TopicDriver`, `SubscriptionDriver`) method by method.
//!
//! The reference backend under a [`Bus`](tidings_core::Bus), as any backend is used:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tidings_core::{Bus, Message, SubscriptionConfig, Topic, TopicConfig};
//! use tidings_testkit::Reference;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tidings_core::Result<()> {
//! let bus = Bus::new(Arc::new(Reference::new()));
//! let greetings: Topic<String> = Topic::new("greetings", TopicConfig::at_least_once());
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! bus.subscribe(&greetings, "printer", SubscriptionConfig::default(), move |m: Message<String>| {
//!     let tx = tx.clone();
//!     async move {
//!         tx.send(m.into_inner()).expect("the test is listening");
//!         Ok(())
//!     }
//! })
//! .await?;
//! greetings.publish(&bus, &"hello".to_string()).await?;
//! assert_eq!(rx.recv().await.as_deref(), Some("hello"));
//! bus.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod conformance;
pub mod reference;

pub use reference::Reference;
