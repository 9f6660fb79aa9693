//! The bus: one backend plus the portable layer (validation, encoding, publish retries, subscriptions).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::backend::{Backend, Capabilities, OutgoingMessage, SubscriptionSpec, TopicDriver, TopicSpec};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::handler::Handler;
use crate::message::{MessageId, PublishOptions, RESERVED_ATTRIBUTE_PREFIX};
use crate::name::validate_name;
use crate::runtime::{self, Runner};
use crate::subscription::SubscriptionConfig;
use crate::topic::{Topic, TopicConfig};

/// Attempts for a publish call that fails with a retryable backend error.
const PUBLISH_ATTEMPTS: u32 = 4;

/// A handle on one backend. Cheap to clone; every clone shares topics and subscriptions.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    caps: Capabilities,
    settings: Settings,
    /// Topics in use on this bus. FxHash: the names are the application's own declarations, and this lookup is on
    /// every publish.
    topics: std::sync::RwLock<FxHashMap<String, TopicEntry>>,
    runners: Mutex<Vec<Arc<Runner>>>,
    recorder: Option<Mutex<HashMap<String, Vec<OutgoingMessage>>>>,
}

#[derive(Clone)]
struct TopicEntry {
    config: TopicConfig,
    driver: Arc<OnceCell<Arc<dyn TopicDriver>>>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus").field("backend", &self.inner.backend.name()).finish_non_exhaustive()
    }
}

/// Builds a [`Bus`] around a backend.
pub struct BusBuilder {
    backend: Arc<dyn Backend>,
    settings: Settings,
    record: bool,
}

impl BusBuilder {
    /// Name mapping and subscription overrides to apply.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }
    /// Keep a copy of every published message for [`Bus::published`] (for tests).
    pub fn record_published(mut self, on: bool) -> Self {
        self.record = on;
        self
    }
    /// The bus.
    pub fn build(self) -> Bus {
        let caps = self.backend.capabilities();
        Bus {
            inner: Arc::new(Inner {
                backend: self.backend,
                caps,
                settings: self.settings,
                topics: std::sync::RwLock::default(),
                runners: Mutex::default(),
                recorder: self.record.then(Mutex::default),
            }),
        }
    }
}

impl Bus {
    /// A bus on `backend` with default settings.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::builder(backend).build()
    }

    /// A builder for a bus on `backend`.
    pub fn builder(backend: Arc<dyn Backend>) -> BusBuilder {
        BusBuilder { backend, settings: Settings::default(), record: false }
    }

    /// The backend's name (`local`, `aws`, `gcp`).
    pub fn backend_name(&self) -> &str {
        self.inner.backend.name()
    }

    /// What the backend does natively.
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The backend itself, for tools and backend tests that need the raw driver.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The spec a subscription of `topic` named `name` gets on this bus (names mapped, config overrides applied).
    pub fn subscription_spec<T>(&self, topic: &Topic<T>, name: &str, config: SubscriptionConfig) -> SubscriptionSpec {
        let config = match self.inner.settings.subscription_override(topic.name(), name) {
            Some(o) => config.apply(o),
            None => config,
        };
        SubscriptionSpec {
            topic: self.topic_spec(topic.name(), topic.config()),
            name: name.to_string(),
            resource: self.inner.settings.subscription_resource_name(topic.name(), name),
            config,
        }
    }

    fn topic_spec(&self, name: &str, config: TopicConfig) -> TopicSpec {
        TopicSpec { name: name.to_string(), resource: self.inner.settings.resource_name(name), config }
    }

    /// The driver of a topic already provisioned on this bus with `config` (its name was validated then).
    fn cached_driver(&self, name: &str, config: TopicConfig) -> Option<Arc<dyn TopicDriver>> {
        let topics = self.inner.topics.read().unwrap();
        let e = topics.get(name)?;
        if e.config == config {
            e.driver.get().cloned()
        } else {
            None
        }
    }

    async fn topic_driver(&self, name: &str, config: TopicConfig) -> Result<Arc<dyn TopicDriver>> {
        if let Some(d) = self.cached_driver(name, config) {
            return Ok(d);
        }
        let entry = {
            let mut topics = self.inner.topics.write().unwrap();
            match topics.get(name) {
                Some(e) if e.config != config => {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "topic {name:?} is declared twice with different configs: {:?} and {config:?}",
                            e.config
                        ),
                    ))
                }
                Some(e) => e.clone(),
                None => {
                    validate_name("topic", name)?;
                    let e = TopicEntry { config, driver: Arc::default() };
                    topics.insert(name.to_string(), e.clone());
                    e
                }
            }
        };
        let spec = self.topic_spec(name, config);
        let driver = entry.driver.get_or_try_init(|| async { self.inner.backend.topic(&spec).await }).await?;
        Ok(driver.clone())
    }

    /// Encodes and validates a message for `topic` without sending it (an outbox stores the result and relays it
    /// later with [`Bus::publish_prepared`]). The id is assigned here.
    pub fn prepare<T: Serialize>(
        &self,
        topic: &Topic<T>,
        message: &T,
        options: PublishOptions,
    ) -> Result<OutgoingMessage> {
        validate_name("topic", topic.name())?;
        self.outgoing(topic, message, options)
    }

    /// [`Bus::prepare`] without the topic name check, for a topic already in use on this bus.
    fn outgoing<T: Serialize>(
        &self,
        topic: &Topic<T>,
        message: &T,
        options: PublishOptions,
    ) -> Result<OutgoingMessage> {
        let now = SystemTime::now();
        let out = OutgoingMessage {
            id: options.id.unwrap_or_else(|| MessageId::generate_at(now)),
            payload: encode(message)?,
            attributes: options.attributes,
            ordering_key: options.ordering_key.map(Arc::from),
            publish_time: now,
        };
        self.validate(topic.name(), topic.config(), &out)?;
        Ok(out)
    }

    /// Checks a prepared message against the topic and this backend's limits; errors name the value and the rule.
    fn validate(&self, name: &str, config: TopicConfig, m: &OutgoingMessage) -> Result<()> {
        let caps = &self.inner.caps;
        if m.attributes.len() > caps.max_attributes {
            return Err(Error::invalid(format!(
                "message on topic {name:?} has {} attributes; the {} backend allows at most {}",
                m.attributes.len(),
                self.backend_name(),
                caps.max_attributes
            )));
        }
        for key in m.attributes.keys() {
            if key.is_empty() {
                return Err(Error::invalid(format!("message on topic {name:?} has an attribute with an empty name")));
            }
            if key.starts_with(RESERVED_ATTRIBUTE_PREFIX) {
                return Err(Error::invalid(format!(
                    "attribute name {key:?} on topic {name:?} is reserved: names starting with \
                     {RESERVED_ATTRIBUTE_PREFIX:?} are tidings' own"
                )));
            }
        }
        match (&m.ordering_key, config.ordered) {
            (Some(k), false) => {
                return Err(Error::invalid(format!(
                    "ordering key {k:?} given for topic {name:?}, which is not ordered; declare it with \
                     TopicConfig::ordered() or drop the key"
                )))
            }
            (Some(k), true) if k.is_empty() => {
                return Err(Error::invalid(format!("empty ordering key on ordered topic {name:?}")))
            }
            _ => {}
        }
        let size = m.payload.len()
            + m.attributes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + m.ordering_key.as_ref().map_or(0, |k| k.len());
        if size > caps.max_message_size {
            return Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!(
                    "message on topic {name:?} is {size} bytes (payload and attributes); the {} backend's limit is {} \
                     bytes",
                    self.backend_name(),
                    caps.max_message_size
                ),
            ));
        }
        Ok(())
    }

    pub(crate) async fn publish<T: Serialize>(
        &self,
        topic: &Topic<T>,
        message: &T,
        options: PublishOptions,
    ) -> Result<MessageId> {
        // The most common publish there is, so it looks the topic up once and builds no batch vector. The message is
        // still checked before the first use of a topic provisions it.
        let (name, config) = (topic.name(), topic.config());
        let cached = self.cached_driver(name, config);
        let mut out = match cached {
            Some(_) => self.outgoing(topic, message, options)?,
            None => self.prepare(topic, message, options)?,
        };
        let driver = match cached {
            Some(driver) => driver,
            None => self.topic_driver(name, config).await?,
        };
        // An in-process bus accepts at once: no send or retry futures (a test bus takes the long way, which records).
        if self.inner.recorder.is_none() {
            if let Some(outcome) = publish_now(driver.as_ref(), name, std::slice::from_mut(&mut out)) {
                return outcome.map(|()| out.id);
            }
        }
        self.send_to(driver.as_ref(), name, std::slice::from_mut(&mut out)).await?;
        Ok(out.id)
    }

    pub(crate) async fn publish_batch<'a, T: Serialize + 'a, I>(
        &self,
        topic: &Topic<T>,
        messages: I,
    ) -> Result<Vec<MessageId>>
    where
        I: IntoIterator<Item = (&'a T, PublishOptions)>,
    {
        let mut batch = messages.into_iter().map(|(m, o)| self.prepare(topic, m, o)).collect::<Result<Vec<_>>>()?;
        let ids = batch.iter().map(|m| m.id.clone()).collect();
        self.send(topic.name(), topic.config(), &mut batch).await?;
        Ok(ids)
    }

    /// Publishes messages made by [`Bus::prepare`] (possibly by another process, as an outbox relay does) to the
    /// topic `name` with `config`; they are validated again against this backend's limits first. The ids are kept,
    /// so exactly-once topics de-duplicate a republish.
    pub async fn publish_prepared(
        &self,
        name: &str,
        config: TopicConfig,
        mut batch: Vec<OutgoingMessage>,
    ) -> Result<()> {
        for m in &batch {
            self.validate(name, config, m)?;
        }
        self.send(name, config, &mut batch).await
    }

    async fn send(&self, name: &str, config: TopicConfig, batch: &mut [OutgoingMessage]) -> Result<()> {
        let driver = self.topic_driver(name, config).await?;
        self.send_to(driver.as_ref(), name, batch).await
    }

    /// Sends in chunks the backend takes. The batch is the driver's once accepted (an in-process bus moves the
    /// payloads into its queues), so a test bus copies what it records beforehand.
    async fn send_to(&self, driver: &dyn TopicDriver, name: &str, batch: &mut [OutgoingMessage]) -> Result<()> {
        // Only a test bus records; the copy costs nothing that matters there.
        let record = self.inner.recorder.as_ref().map(|rec| (rec, batch.to_vec()));
        let max = self.inner.caps.max_publish_batch.max(1);
        for chunk in batch.chunks_mut(max) {
            publish_with_retries(driver, name, chunk).await?;
        }
        if let Some((rec, copy)) = record {
            rec.lock().unwrap().entry(name.to_string()).or_default().extend(copy);
        }
        Ok(())
    }

    /// Starts a subscription: every message published to `topic` after it exists is handed to `handler`, with
    /// `config`'s concurrency, ack deadline, retries and dead-letter queue (config file overrides apply).
    ///
    /// The name must be unique per topic on this bus until the subscription is shut down.
    pub async fn subscribe<T, H>(
        &self,
        topic: &Topic<T>,
        name: &str,
        config: SubscriptionConfig,
        handler: H,
    ) -> Result<crate::Subscription>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        H: Handler<T>,
    {
        validate_name("subscription", name)?;
        let spec = self.subscription_spec(topic, name, config);
        spec.config
            .validate()
            .map_err(|e| Error::invalid(format!("subscription {name:?} on topic {:?}: {e}", topic.name())))?;
        self.topic_driver(topic.name(), topic.config()).await?;
        let key = (topic.name().to_string(), name.to_string());
        {
            let runners = self.inner.runners.lock().unwrap();
            if runners.iter().any(|r| r.key == key && !r.is_stopped()) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("subscription {name:?} on topic {:?} is already declared on this bus", topic.name()),
                ));
            }
        }
        let driver = self.inner.backend.subscription(&spec).await?;
        let runner = runtime::start(key, spec, driver, self.inner.caps.clone(), handler);
        let mut runners = self.inner.runners.lock().unwrap();
        runners.retain(|r| !r.is_stopped());
        runners.push(runner.clone());
        Ok(crate::Subscription::new(runner))
    }

    /// Stops every subscription on this bus: no new deliveries, in-flight handlers get up to `timeout` to finish,
    /// unfinished messages stay unacked (they are redelivered after their ack deadline).
    pub async fn shutdown(&self, timeout: Duration) {
        let runners: Vec<_> = self.inner.runners.lock().unwrap().drain(..).collect();
        for r in &runners {
            r.cancel();
        }
        for r in runners {
            r.wait(timeout).await;
        }
    }

    /// What the code published to `topic` on this bus, decoded (only on a bus built with `record_published`).
    pub fn published<T: DeserializeOwned>(&self, topic: &Topic<T>) -> Vec<T> {
        self.published_raw(topic.name())
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).expect("recorded payloads were encoded from T"))
            .collect()
    }

    /// Recorded messages of a topic with ids, attributes and ordering keys.
    pub fn published_raw(&self, topic: &str) -> Vec<OutgoingMessage> {
        let rec = self.inner.recorder.as_ref().expect("Bus::published needs a bus built with record_published(true)");
        rec.lock().unwrap().get(topic).cloned().unwrap_or_default()
    }
}

/// JSON-encodes a payload.
///
/// Small payloads (the common case) are cut from a per-thread chunk: one allocation serves many messages, a copy for
/// a second subscriber is a reference count, and freeing the last message of a chunk frees it all at once. A payload
/// that outlives its neighbours keeps its chunk alive, so the in-memory bus copies the payloads it parks for long (its
/// dead-letter queue) out of their chunks. Larger payloads get an allocation of their own, of exactly their size.
pub(crate) fn encode<T: Serialize>(message: &T) -> Result<Bytes> {
    /// Bytes of a chunk.
    const CHUNK: usize = 8 * 1024;
    /// Payloads above this size get their own allocation.
    const OWN: usize = 1024;
    thread_local! {
        static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }
    SCRATCH.with(|scratch| {
        // A `Serialize` impl that publishes from inside itself finds the chunk taken and gets a fresh buffer.
        let Ok(mut buf) = scratch.try_borrow_mut() else {
            return Ok(Bytes::copy_from_slice(&serde_json::to_vec(message)?));
        };
        if buf.capacity() < OWN {
            *buf = BytesMut::with_capacity(CHUNK);
        }
        // Empty unless a `Serialize` impl panicked half-way through the previous message.
        buf.clear();
        if let Err(e) = serde_json::to_writer((&mut *buf).writer(), message) {
            buf.clear();
            return Err(e.into());
        }
        if buf.len() <= OWN {
            return Ok(buf.split().freeze());
        }
        let own = Bytes::copy_from_slice(&buf);
        buf.clear();
        if buf.capacity() > 2 * CHUNK {
            // A large payload grew the buffer: do not keep that much for the small ones.
            *buf = BytesMut::new();
        }
        Ok(own)
    })
}

/// The driver's immediate publish: its final outcome, or `None` when the async path (with retries) must follow (not
/// supported, or failed retryably).
fn publish_now(driver: &dyn TopicDriver, topic: &str, chunk: &mut [OutgoingMessage]) -> Option<Result<()>> {
    match driver.publish_now(chunk)? {
        Ok(()) => Some(Ok(())),
        Err(e) if e.is_retryable() => None,
        Err(e) => {
            tracing::error!(topic, error = %e, "publish failed");
            Some(Err(e))
        }
    }
}

async fn publish_with_retries(driver: &dyn TopicDriver, topic: &str, chunk: &mut [OutgoingMessage]) -> Result<()> {
    if let Some(outcome) = publish_now(driver, topic, chunk) {
        return outcome;
    }
    let mut attempt = 1;
    loop {
        match driver.publish(&*chunk).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && attempt < PUBLISH_ATTEMPTS => {
                let delay = runtime::jittered(Duration::from_millis(100) * 2u32.pow(attempt - 1));
                tracing::warn!(topic, attempt, error = %e, ?delay, "publish failed, retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(topic, attempt, error = %e, "publish failed; the message may or may not have been delivered");
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    use super::{encode, publish_with_retries};
    use crate::backend::{OutgoingMessage, TopicDriver};
    use crate::{Error, Result};

    /// Refuses every immediate publish, retryably or not; the async path accepts.
    #[derive(Debug)]
    struct RefusesAtOnce {
        retryable: bool,
        async_calls: AtomicU32,
    }

    #[async_trait::async_trait]
    impl TopicDriver for RefusesAtOnce {
        async fn publish(&self, _batch: &[OutgoingMessage]) -> Result<()> {
            self.async_calls.fetch_add(1, SeqCst);
            Ok(())
        }
        fn publish_now(&self, _batch: &mut [OutgoingMessage]) -> Option<Result<()>> {
            Some(Err(Error::backend("refused (injected)", self.retryable)))
        }
    }

    #[tokio::test]
    async fn an_immediate_publish_that_fails_retryably_goes_the_async_way_and_a_final_failure_does_not() {
        let retryable = RefusesAtOnce { retryable: true, async_calls: AtomicU32::new(0) };
        publish_with_retries(&retryable, "t", &mut []).await.unwrap();
        assert_eq!(retryable.async_calls.load(SeqCst), 1);
        let fatal = RefusesAtOnce { retryable: false, async_calls: AtomicU32::new(0) };
        let e = publish_with_retries(&fatal, "t", &mut []).await.unwrap_err();
        assert!(e.to_string().contains("refused (injected)"), "{e}");
        assert_eq!(fatal.async_calls.load(SeqCst), 0);
    }

    #[test]
    fn encoded_payloads_never_alias_across_chunks_and_sizes() {
        // Sizes around the chunk and own-allocation limits, in an order that crosses chunk ends many times.
        let sizes: Vec<usize> = (0..2_000).map(|i| (i * 7919) % 3_000).collect();
        let texts: Vec<String> = sizes.iter().enumerate().map(|(i, n)| format!("{i}:{}", "x".repeat(*n))).collect();
        let payloads: Vec<_> = texts.iter().map(|t| encode(t).unwrap()).collect();
        for (t, p) in texts.iter().zip(&payloads) {
            assert_eq!(serde_json::from_slice::<String>(p).unwrap(), *t);
            assert_eq!(p.len(), t.len() + 2, "exactly the encoding, no spare bytes");
        }
    }

    #[test]
    fn small_payloads_share_a_chunk_and_large_ones_do_not() {
        let (a, b) = (encode(&"first").unwrap(), encode(&"second").unwrap());
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr(), "consecutive small payloads are adjacent");
        let large = encode(&"y".repeat(5_000)).unwrap();
        let c = encode(&"third").unwrap();
        assert_eq!(b.as_ptr().wrapping_add(b.len()), c.as_ptr(), "a large payload does not take chunk space");
        let range = large.as_ptr() as usize..large.as_ptr() as usize + large.len();
        assert!(!range.contains(&(c.as_ptr() as usize)));
    }

    #[test]
    fn a_serializer_that_panics_leaves_no_partial_payload_behind() {
        struct Panics;
        impl serde::Serialize for Panics {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("half", "written")?;
                panic!("serializer bug");
            }
        }
        assert!(std::panic::catch_unwind(|| encode(&Panics)).is_err());
        assert_eq!(&encode(&"next").unwrap()[..], b"\"next\"");
    }

    #[test]
    fn an_encoding_error_leaves_no_partial_payload_behind() {
        use std::collections::HashMap;
        // JSON object keys must be strings: serde_json refuses a map keyed by a tuple after writing "{".
        let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
        assert!(encode(&bad).is_err());
        assert_eq!(&encode(&7).unwrap()[..], b"7");
    }
}
