//! Layers: cross-cutting concerns (recording for tests, metrics, tracing, fault injection) that wrap a backend
//! instead of living in it, in the manner of OpenDAL's layers. A layer returns a backend that delegates to the one
//! it wraps, and usually wraps the drivers that backend hands out too.
//!
//! ```
//! use std::sync::Arc;
//! use tidings::backend::{Backend, Capabilities, SubscriptionDriver, SubscriptionSpec, TopicDriver, TopicSpec};
//! use tidings::layer::Layer;
//!
//! /// Logs every topic the application opens.
//! struct LogTopics;
//!
//! #[derive(Debug)]
//! struct Logged(Arc<dyn Backend>);
//!
//! impl Layer for LogTopics {
//!     fn layer(&self, inner: Arc<dyn Backend>) -> Arc<dyn Backend> {
//!         Arc::new(Logged(inner))
//!     }
//! }
//!
//! #[async_trait::async_trait]
//! impl Backend for Logged {
//!     fn name(&self) -> &str { self.0.name() }
//!     fn capabilities(&self) -> Capabilities { self.0.capabilities() }
//!     async fn topic(&self, spec: &TopicSpec) -> tidings::Result<Arc<dyn TopicDriver>> {
//!         println!("opening topic {}", spec.name);
//!         self.0.topic(spec).await
//!     }
//!     async fn subscription(&self, spec: &SubscriptionSpec) -> tidings::Result<Arc<dyn SubscriptionDriver>> {
//!         self.0.subscription(spec).await
//!     }
//! }
//!
//! let bus = tidings::Bus::builder(tidings::local().backend().clone()).layer(LogTopics).build();
//! # let _ = bus;
//! ```

use std::sync::Arc;

use crate::backend::Backend;

/// Wraps a backend. Applied with [`crate::BusBuilder::layer`]; layers added later wrap earlier ones.
pub trait Layer: Send + Sync + 'static {
    /// The wrapped backend.
    fn layer(&self, inner: Arc<dyn Backend>) -> Arc<dyn Backend>;
}
