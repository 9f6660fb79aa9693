//! Shared test support: a local bus behind a fault-injecting wrapper (broker outage, a relay that hangs after the
//! broker accepted a batch) that counts what reached the broker, per topic, in order.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tidings_core::backend::{
    OutgoingMessage, PublishReport, SubscriptionDriver, SubscriptionSpec, TopicDriver, TopicSpec,
};
use tidings_core::{Backend, Bus, Capabilities, Error, Result};
use tidings_local::LocalBackend;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub n: u64,
}

/// Switches and counters of the wrapper.
#[derive(Debug, Default)]
pub struct Faults {
    pub down: AtomicBool,
    pub hang_after_publish: AtomicBool,
    /// Message ids that reached the broker, per topic, in order (a republish appears twice).
    pub accepted: Mutex<HashMap<String, Vec<String>>>,
    /// The size of each publish call, per topic.
    pub calls: Mutex<HashMap<String, Vec<usize>>>,
}

impl Faults {
    pub fn accepted(&self, topic: &str) -> Vec<String> {
        self.accepted.lock().unwrap().get(topic).cloned().unwrap_or_default()
    }
    pub fn calls(&self, topic: &str) -> Vec<usize> {
        self.calls.lock().unwrap().get(topic).cloned().unwrap_or_default()
    }
    pub fn total(&self) -> usize {
        self.accepted.lock().unwrap().values().map(Vec::len).sum()
    }
}

#[derive(Debug)]
struct Faulty {
    inner: LocalBackend,
    faults: Arc<Faults>,
}

#[derive(Debug)]
struct FaultyTopic {
    name: String,
    inner: Arc<dyn TopicDriver>,
    faults: Arc<Faults>,
}

#[async_trait]
impl Backend for Faulty {
    fn name(&self) -> &str {
        "local"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>> {
        let inner = self.inner.topic(spec).await?;
        Ok(Arc::new(FaultyTopic { name: spec.name.clone(), inner, faults: self.faults.clone() }))
    }
    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>> {
        self.inner.subscription(spec).await
    }
}

#[async_trait]
impl TopicDriver for FaultyTopic {
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport> {
        if self.faults.down.load(SeqCst) {
            return Err(Error::backend("broker unreachable (injected)", true));
        }
        let ids: Vec<String> = batch.iter().map(|m| m.id.to_string()).collect();
        self.faults.calls.lock().unwrap().entry(self.name.clone()).or_default().push(batch.len());
        let report = self.inner.publish(batch).await?;
        assert!(report.failures().is_empty(), "the local bus accepts whole batches");
        self.faults.accepted.lock().unwrap().entry(self.name.clone()).or_default().extend(ids);
        if self.faults.hang_after_publish.load(SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(report)
    }

    async fn cancel(&self, id: &tidings_core::MessageId) -> Result<bool> {
        self.inner.cancel(id).await
    }
}

/// A bus over a fresh local backend behind the fault wrapper.
pub fn bus() -> (Bus, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let backend = Faulty { inner: LocalBackend::new(), faults: faults.clone() };
    (Bus::new(Arc::new(backend)), faults)
}

/// A unique suffix for table and topic names.
pub fn unique() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 12..].to_string()
}

/// Polls `cond` every 10 ms for at most `secs` seconds.
pub async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

pub fn topic<T>(base: &str, config: tidings_core::TopicConfig) -> tidings_core::Topic<T> {
    let name: &'static str = Box::leak(format!("{base}-{}", unique()).into_boxed_str());
    tidings_core::Topic::new(name, config)
}
