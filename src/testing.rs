//! Helpers for applications' unit tests.
//!
//! [`bus`] gives each test its own in-memory bus that records what the code published, so a test can assert on it
//! (like Encore's `et.Topic(...).PublishedMessages()`), and can drive subscriptions' handlers: the local bus runs on
//! tokio's clock, so under `#[tokio::test(start_paused = true)]` (tokio's `test-util` feature) backoffs and ack
//! deadlines elapse without real waiting.
//!
//! ```
//! # use serde::{Deserialize, Serialize};
//! # use tidings::{Topic, TopicConfig};
//! # #[derive(Serialize, Deserialize, Debug, PartialEq)] struct Signup { id: u32 }
//! # static SIGNUPS: Topic<Signup> = Topic::new("signups", TopicConfig::at_least_once());
//! # async fn register(bus: &tidings::Bus, id: u32) { SIGNUPS.publish(bus, &Signup { id }).await.unwrap(); }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus = tidings::testing::bus();
//! register(&bus, 7).await;
//! assert_eq!(bus.published(&SIGNUPS), vec![Signup { id: 7 }]);
//! # }
//! ```
//!
//! Recording is a [`Layer`] ([`Recording`]), so it wraps any backend:
//! `Bus::builder(backend).layer(recording.clone())`.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tidings_core::backend::{
    Backend, Capabilities, OutgoingMessage, PublishReport, SubscriptionDriver, SubscriptionSpec, TopicDriver, TopicSpec,
};
use tidings_core::{Bus, Layer, Result, Topic};

/// An isolated in-memory bus that records published messages ([`TestBus::published`]).
pub fn bus() -> TestBus {
    let recording = Recording::default();
    let bus = Bus::builder(Arc::new(tidings_local::LocalBackend::new())).layer(recording.clone()).build();
    TestBus { bus, recording }
}

/// A bus with its recording; derefs to [`Bus`], so it goes wherever `&Bus` does.
#[derive(Debug, Clone)]
pub struct TestBus {
    bus: Bus,
    recording: Recording,
}

impl Deref for TestBus {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.bus
    }
}

impl TestBus {
    /// The bus itself (a clone shares everything).
    pub fn bus(&self) -> Bus {
        self.bus.clone()
    }

    /// What the code published to `topic` on this bus, decoded, in publish order.
    pub fn published<T: DeserializeOwned>(&self, topic: &Topic<T>) -> Vec<T> {
        self.recording.published(topic)
    }

    /// The recording itself: messages with ids, attributes and ordering keys.
    pub fn recording(&self) -> &Recording {
        &self.recording
    }
}

/// A layer that keeps a copy of every message a backend accepted, per topic (by logical name).
#[derive(Debug, Clone, Default)]
pub struct Recording {
    messages: Arc<Mutex<HashMap<String, Vec<OutgoingMessage>>>>,
}

impl Recording {
    /// What was published to `topic`, decoded.
    pub fn published<T: DeserializeOwned>(&self, topic: &Topic<T>) -> Vec<T> {
        self.published_raw(topic.name())
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).expect("recorded payloads were encoded from T"))
            .collect()
    }

    /// Recorded messages of a topic with ids, attributes and ordering keys.
    pub fn published_raw(&self, topic: &str) -> Vec<OutgoingMessage> {
        self.messages.lock().unwrap().get(topic).cloned().unwrap_or_default()
    }

    fn record(&self, topic: &str, accepted: impl IntoIterator<Item = OutgoingMessage>) {
        self.messages.lock().unwrap().entry(topic.to_string()).or_default().extend(accepted);
    }
}

impl Layer for Recording {
    fn layer(&self, inner: Arc<dyn Backend>) -> Arc<dyn Backend> {
        Arc::new(Recorded { inner, recording: self.clone() })
    }
}

#[derive(Debug)]
struct Recorded {
    inner: Arc<dyn Backend>,
    recording: Recording,
}

#[async_trait]
impl Backend for Recorded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>> {
        let inner = self.inner.topic(spec).await?;
        Ok(Arc::new(RecordedTopic { inner, topic: spec.name.clone(), recording: self.recording.clone() }))
    }
    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>> {
        self.inner.subscription(spec).await
    }
}

#[derive(Debug)]
struct RecordedTopic {
    inner: Arc<dyn TopicDriver>,
    topic: String,
    recording: Recording,
}

#[async_trait]
impl TopicDriver for RecordedTopic {
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport> {
        let report = self.inner.publish(batch).await?;
        let refused: Vec<usize> = report.failures().iter().map(|(i, _)| *i).collect();
        let accepted = batch.iter().enumerate().filter(|(i, _)| !refused.contains(i)).map(|(_, m)| m.clone());
        self.recording.record(&self.topic, accepted);
        Ok(report)
    }

    fn publish_now(&self, batch: &mut [OutgoingMessage]) -> Option<Result<()>> {
        // The driver may move the payloads out once it accepted them: copy first, keep the copy on success.
        let copy = batch.to_vec();
        let outcome = self.inner.publish_now(batch)?;
        if outcome.is_ok() {
            self.recording.record(&self.topic, copy);
        }
        Some(outcome)
    }

    async fn cancel(&self, id: &tidings_core::MessageId) -> Result<bool> {
        self.inner.cancel(id).await
    }
}
