//! The bus: one backend (with its layers) plus the portable layer: validation, encoding, publishing through
//! [`crate::publish`], subscriptions through the runtime, and shutdown.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::backend::calls::{self, Scope};
use crate::backend::{Backend, BackendInfo, Capabilities, OutgoingMessage, TopicSpec};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};
use crate::handler::{BatchHandler, Handler};
use crate::layer::Layer;
use crate::message::{MessageId, PublishOptions};
use crate::name::validate_name;
use crate::publish::{encode, validate, Publisher};
use crate::runtime::{self, Runner, Subscription};
use crate::subscription::SubscriptionConfig;
use crate::topic::{Topic, TopicConfig};
use crate::trace::{self, TraceContext};
use tracing::Instrument;

mod tools;

/// How long after the last `subscribe` the bus checks for subscription overrides that matched nothing.
const OVERRIDE_CHECK_DELAY: Duration = Duration::from_secs(5);

/// A handle on one backend. Cheap to clone; every clone shares topics and subscriptions.
///
/// Applications use [`Bus::subscribe`], [`Bus::shutdown`] and the publish methods of [`Topic`]; the methods under
/// "For backends and tools" serve the outbox, operator tools and backend tests.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    /// The backend's names and pricing.
    info: BackendInfo,
    backend: Arc<dyn Backend>,
    /// What the backend does natively (the runtime completes the rest).
    native: Capabilities,
    /// What the bus offers: `native`, completed by core.
    caps: Capabilities,
    settings: Settings,
    /// How often running subscriptions' backlog gauges are sampled (zero: never).
    backlog_interval: Duration,
    /// Topics in use on this bus. FxHash: the names are the application's own declarations, and this lookup is on
    /// every publish.
    topics: std::sync::RwLock<FxHashMap<String, TopicEntry>>,
    subscriptions: Mutex<Subscriptions>,
    shut: AtomicBool,
}

#[derive(Default)]
struct Subscriptions {
    running: Vec<Arc<Runner>>,
    /// Keys whose `subscribe` is under way (checked and reserved under one lock, so two calls cannot both pass).
    reserved: HashSet<(String, String)>,
    /// Every subscription ever declared on this bus, for the override check.
    declared: BTreeSet<(String, String)>,
    /// Overrides already reported as matching nothing.
    warned: BTreeSet<String>,
    last_subscribe: Option<tokio::time::Instant>,
    check_scheduled: bool,
}

#[derive(Clone)]
struct TopicEntry {
    config: TopicConfig,
    publisher: Arc<OnceCell<Arc<Publisher>>>,
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
    backlog_interval: Duration,
}

impl BusBuilder {
    /// Name mapping and subscription overrides to apply.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Wraps the backend in `layer` (recording, metrics, tracing, fault injection). Layers added later wrap the
    /// ones added before, so the last one sees every call first.
    pub fn layer(mut self, layer: impl Layer) -> Self {
        self.backend = layer.layer(self.backend);
        self
    }

    /// How often each running subscription's backlog gauges (`tidings.subscription.*`) are sampled while a metrics
    /// recorder is installed: [`crate::metrics::DEFAULT_BACKLOG_INTERVAL`] unless set; zero turns sampling off. Each
    /// sample is an API call on cloud backends (SQS `GetQueueAttributes`, say).
    pub fn backlog_sample_interval(mut self, interval: Duration) -> Self {
        self.backlog_interval = interval;
        self
    }

    /// The bus on the backend as the layers wrapped it, with these settings. Nothing is created on the backend yet:
    /// a topic is provisioned when it is first published to or subscribed.
    pub fn build(self) -> Bus {
        let native = self.backend.capabilities();
        Bus {
            inner: Arc::new(Inner {
                info: self.backend.info(),
                backend: self.backend,
                caps: native.completed(),
                native,
                settings: self.settings,
                backlog_interval: self.backlog_interval,
                topics: std::sync::RwLock::default(),
                subscriptions: Mutex::default(),
                shut: AtomicBool::new(false),
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
        BusBuilder {
            backend,
            settings: Settings::default(),
            backlog_interval: crate::metrics::DEFAULT_BACKLOG_INTERVAL,
        }
    }

    /// The backend's name (`local`, `aws`, `gcp`, ...).
    pub fn backend_name(&self) -> &str {
        &self.inner.info.name
    }

    /// The backend's names (its OpenTelemetry `messaging.system`) and how its API calls are billed.
    pub fn backend_info(&self) -> &BackendInfo {
        &self.inner.info
    }

    /// The backend's API calls (or server round trips) so far, by operation, where it makes any.
    pub fn api_calls(&self) -> Option<&crate::backend::calls::ApiCalls> {
        self.inner.backend.api_calls()
    }

    /// What the bus offers on its backend: what the backend does natively, completed by core (ordered topics work on
    /// every backend). [`Bus::native_capabilities`] tells what the backend does itself.
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    /// What the backend does natively ([`crate::Backend::capabilities`]).
    pub fn native_capabilities(&self) -> &Capabilities {
        &self.inner.native
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Starts a subscription: every message published to `topic` after it exists is handed to `handler`, with
    /// `config`'s concurrency, ack deadline, retries and dead-letter queue (config file overrides apply).
    ///
    /// The name must be unique per topic on this bus until the subscription is shut down. After
    /// [`Bus::shutdown`] this fails with [`ErrorKind::Shutdown`].
    pub async fn subscribe<T, H>(
        &self,
        topic: &Topic<T>,
        name: &str,
        config: SubscriptionConfig,
        handler: H,
    ) -> Result<Subscription>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        H: Handler<T>,
    {
        let spec = self.subscription_spec(topic, name, config);
        self.start_subscription(topic, spec, |info, key, spec, driver, caps| {
            runtime::start(info, key, spec, driver, caps, handler)
        })
        .await
    }

    /// Starts a subscription whose handler takes batches: like [`Bus::subscribe`], but `handler` gets up to
    /// `config.max_messages` messages in one call, once that many arrived or `config.max_wait` after the first one
    /// ([`SubscriptionConfig::max_messages`], [`SubscriptionConfig::max_wait`]), and `max_concurrency` counts batches.
    ///
    /// The handler returns `Ok(BatchOutcome::AckAll)`, one result per message (`Ok(BatchOutcome::Each(results))`, in
    /// the batch's order), or `Err(e)` for every message. Each message is then settled on its own, exactly as a
    /// single handler's: acked, retried after its own backoff with its own attempt count, or dead-lettered. A panic
    /// fails every message of the batch; so does a wrong number of results (retried, never acked). Every lease of a
    /// running batch is extended, and a shutdown tells the batch through [`crate::Message::shutdown_requested`].
    ///
    /// A `max_messages` above the backend's [`Capabilities::max_batch_messages`] is refused with
    /// [`ErrorKind::InvalidInput`], naming both; so are a `max_messages` of 0 and a zero `max_wait`.
    pub async fn subscribe_batch<T, H>(
        &self,
        topic: &Topic<T>,
        name: &str,
        config: SubscriptionConfig,
        handler: H,
    ) -> Result<Subscription>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        H: BatchHandler<T>,
    {
        let spec = self.subscription_spec(topic, name, config).with_batch(true);
        self.start_subscription(topic, spec, |info, key, spec, driver, caps| {
            runtime::start_batch(info, key, spec, driver, caps, handler)
        })
        .await
    }

    /// The part of `subscribe` and `subscribe_batch` that is the same: checks, provisioning, then `start` runs it.
    async fn start_subscription<T>(
        &self,
        topic: &Topic<T>,
        spec: crate::backend::SubscriptionSpec,
        start: impl FnOnce(
            &BackendInfo,
            (String, String),
            crate::backend::SubscriptionSpec,
            Arc<dyn crate::SubscriptionDriver>,
            Capabilities,
        ) -> Arc<Runner>,
    ) -> Result<Subscription>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let name = spec.name.as_str();
        self.check_open()?;
        validate_name("subscription", name)?;
        spec.config
            .validate()
            .map_err(|e| Error::invalid(format!("subscription {name:?} on topic {:?}: {e}", topic.name())))?;
        let (n, bound) = (spec.config.max_messages, self.inner.caps.max_batch_messages);
        if spec.batch && n > bound {
            return Err(Error::invalid(format!(
                "subscription {name:?} on topic {:?}: max_messages {n} is above the {} backend's limit of {bound} \
                 messages per batch (Capabilities::max_batch_messages); a batch holds 1 to {bound} messages",
                topic.name(),
                self.backend_name()
            )));
        }
        if let (Some(limit), false) = (spec.config.max_backlog, self.inner.caps.bounded_backlog) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "subscription {name:?} on topic {:?} sets max_backlog = {limit}, but the {} backend lacks the \
                     `bounded_backlog` capability (the broker keeps the backlog under its own limits); remove the limit \
                     or choose another backend",
                    topic.name(),
                    self.backend_name()
                ),
            ));
        }
        self.publisher(topic.name(), topic.config()).await?;
        let key = (topic.name().to_string(), name.to_string());
        let reservation = self.reserve(key.clone())?;
        // Provisioning is retried while it fails retryably (drivers never retry; each of its steps is idempotent).
        let provision = crate::retry::call("provision subscription", None, || self.inner.backend.subscription(&spec));
        let driver = calls::scoped(Scope::subscription(topic.name(), name), provision).await?;
        let driver: Arc<dyn crate::SubscriptionDriver> = match self.api_calls() {
            Some(_) => {
                Arc::new(calls::ScopedSubscription { scope: Scope::subscription(topic.name(), name), inner: driver })
            }
            None => driver,
        };
        // Only where the backend can tell its backlog (GCP's operator figures would pull the DLQ on every sample).
        let source = match self.inner.caps.backlog.then(|| self.inner.backend.admin()) {
            Some(Some(admin)) => crate::metrics::backlog::Source::Admin(admin),
            Some(None) => crate::metrics::backlog::Source::Driver(driver.clone()),
            None => crate::metrics::backlog::Source::None,
        };
        let sampled = spec.clone();
        let runner = start(&self.inner.info, key, spec, driver, self.inner.native.clone());
        let stop = runner.cancel_token().clone();
        crate::metrics::backlog::start(self.backend_name(), sampled, source, self.inner.backlog_interval, stop);
        {
            let mut subs = self.inner.subscriptions.lock().unwrap();
            subs.running.retain(|r| !r.is_stopped());
            subs.running.push(runner.clone());
        }
        drop(reservation);
        self.schedule_override_check();
        Ok(Subscription::new(runner))
    }

    /// Checks that no other subscription with this key runs or is being started, and reserves it until the guard
    /// drops.
    fn reserve(&self, key: (String, String)) -> Result<Reservation<'_>> {
        let mut subs = self.inner.subscriptions.lock().unwrap();
        let taken = subs.reserved.contains(&key) || subs.running.iter().any(|r| r.key == key && !r.is_stopped());
        if taken {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("subscription {:?} on topic {:?} is already declared on this bus", key.1, key.0),
            ));
        }
        subs.reserved.insert(key.clone());
        subs.declared.insert(key.clone());
        subs.last_subscribe = Some(tokio::time::Instant::now());
        Ok(Reservation { bus: self, key })
    }

    /// Stops every subscription on this bus, all together: no new deliveries, messages received but not yet handed to
    /// a handler are released at once, in-flight handlers get up to `timeout` to finish, unfinished messages stay
    /// unacked (they are redelivered after their ack deadline). Returns within `timeout` plus
    /// [`Bus::SHUTDOWN_MARGIN`] (2 s), whatever the backend still has open (an SQS long poll): that finishes in the
    /// background. Afterwards, publishing and subscribing on this bus (and its clones) fail with [`ErrorKind::Shutdown`].
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.shut.store(true, Ordering::Release);
        let runners: Vec<_> = self.inner.subscriptions.lock().unwrap().running.drain(..).collect();
        runtime::stop_all(&runners, timeout).await;
    }

    /// Whether [`Bus::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<()> {
        if self.is_shut_down() {
            return Err(Error::new(
                ErrorKind::Shutdown,
                "the bus was shut down; build a new one to publish or subscribe",
            ));
        }
        Ok(())
    }

    /// Subscription overrides in configuration (`subscriptions.<topic>.<subscription>`) that match no subscription
    /// declared on this bus so far, as `<topic>.<subscription>` spelled as in the configuration.
    pub fn unmatched_overrides(&self) -> Vec<String> {
        let declared = self.inner.subscriptions.lock().unwrap().declared.clone();
        self.inner.settings.unmatched_overrides(&declared)
    }

    /// Fails, naming each one and the declared subscriptions, when a subscription override in configuration matches
    /// no subscription declared on this bus. Call it once the application's subscriptions are up; the bus also logs
    /// a warning per unmatched override a few seconds after the last `subscribe`.
    pub fn verify_overrides(&self) -> Result<()> {
        let unmatched = self.unmatched_overrides();
        if unmatched.is_empty() {
            return Ok(());
        }
        let declared = self.inner.subscriptions.lock().unwrap().declared.clone();
        Err(Error::config(crate::config::unmatched_message(&unmatched, &declared)))
    }

    fn schedule_override_check(&self) {
        if self.inner.settings.subscriptions.is_empty() {
            return;
        }
        {
            let mut subs = self.inner.subscriptions.lock().unwrap();
            if subs.check_scheduled {
                return;
            }
            subs.check_scheduled = true;
        }
        let bus = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = bus.upgrade() else { return };
                let last = inner.subscriptions.lock().unwrap().last_subscribe;
                let due = last.map_or_else(tokio::time::Instant::now, |t| t + OVERRIDE_CHECK_DELAY);
                drop(inner);
                tokio::time::sleep_until(due).await;
                let Some(inner) = bus.upgrade() else { return };
                let mut subs = inner.subscriptions.lock().unwrap();
                if subs.last_subscribe != last {
                    continue;
                }
                subs.check_scheduled = false;
                let unmatched = inner.settings.unmatched_overrides(&subs.declared);
                for key in unmatched {
                    if subs.warned.insert(key.clone()) {
                        tracing::warn!(
                            key = %format!("subscriptions.{key}"),
                            declared = ?subs.declared.iter().map(|(t, s)| format!("{t}.{s}")).collect::<Vec<_>>(),
                            "a subscription override in configuration matches no subscription declared on this bus"
                        );
                    }
                }
                return;
            }
        });
    }

    /// The publisher of a topic already in use on this bus with `config` (its name was validated then).
    fn cached_publisher(&self, name: &str, config: TopicConfig) -> Option<Arc<Publisher>> {
        let topics = self.inner.topics.read().unwrap();
        let e = topics.get(name)?;
        if e.config == config {
            e.publisher.get().cloned()
        } else {
            None
        }
    }

    async fn publisher(&self, name: &str, config: TopicConfig) -> Result<Arc<Publisher>> {
        if let Some(p) = self.cached_publisher(name, config) {
            return Ok(p);
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
                    self.check_supported(name, config)?;
                    let e = TopicEntry { config, publisher: Arc::default() };
                    topics.insert(name.to_string(), e.clone());
                    e
                }
            }
        };
        let spec = self.topic_spec(name, config);
        let publisher = entry
            .publisher
            .get_or_try_init(|| async {
                let provision = crate::retry::call("provision topic", None, || self.inner.backend.topic(&spec));
                let driver = calls::scoped(Scope::topic(name), provision).await?;
                let driver: Arc<dyn crate::TopicDriver> = match self.api_calls() {
                    Some(_) => Arc::new(calls::ScopedTopic { scope: Scope::topic(name), inner: driver }),
                    None => driver,
                };
                Ok::<_, Error>(Arc::new(Publisher::new(self.backend_name(), name, config, driver, &self.inner.caps)))
            })
            .await?;
        Ok(publisher.clone())
    }

    /// A topic config the bus cannot honour is refused when the topic is first used, never downgraded. Ordered topics
    /// never are: where the backend lacks native ordering, the runtime's sequencer completes it.
    fn check_supported(&self, name: &str, config: TopicConfig) -> Result<()> {
        if !config.is_exactly_once() || self.inner.caps.exactly_once {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "topic {name:?} is declared exactly-once, but the {} backend lacks the `exactly_once` capability; \
                 declare it without that guarantee or choose another backend",
                self.backend_name()
            ),
        ))
    }

    fn topic_spec(&self, name: &str, config: TopicConfig) -> TopicSpec {
        TopicSpec::new(name, self.inner.settings.resource_name(name), config)
    }

    /// [`Bus::prepare`] without the topic name check, for a topic already in use on this bus.
    fn outgoing<T: Serialize>(
        &self,
        topic: &Topic<T>,
        message: &T,
        options: PublishOptions,
        trace: Option<TraceContext>,
    ) -> Result<OutgoingMessage> {
        let now = SystemTime::now();
        if let Some(id) = &options.id {
            crate::message::validate_custom_id(id)?;
        }
        let mut out = OutgoingMessage::new(
            options.id.unwrap_or_else(|| MessageId::generate_at(now)),
            encode(message)?,
            options.attributes,
            options.ordering_key.map(Arc::from),
            now,
        )
        .with_trace(trace);
        self.validate(topic.name(), topic.config(), &out)?;
        if let Some(at) = options.deliver_at {
            self.schedule(topic.name(), at, now, &mut out)?;
        }
        Ok(out)
    }

    /// Makes `out` due at `at`: nothing when `at` is not in the future (it delivers at once); a delay beyond the
    /// topic's retention limit is refused naming both; on a backend without native delay the due time goes into the
    /// [`DELIVER_AT_ATTRIBUTE`](crate::backend::wire::DELIVER_AT_ATTRIBUTE) attribute (which must fit the attribute
    /// limit beside the application's).
    fn schedule(&self, name: &str, at: SystemTime, now: SystemTime, out: &mut OutgoingMessage) -> Result<()> {
        use crate::backend::wire::format_deliver_at;
        let Ok(delay) = at.duration_since(now) else { return Ok(()) };
        if delay.is_zero() {
            return Ok(());
        }
        let (limit, what) = self.delay_limit(name);
        if delay > limit {
            return Err(Error::invalid(format!(
                "deliver_at {} on topic {name:?} is {} from now, beyond {}: {what}; a delayed message must be \
                 delivered within it",
                format_deliver_at(at),
                humantime::format_duration(Duration::from_secs(crate::backend::time::secs_ceil(delay))),
                humantime::format_duration(limit),
            )));
        }
        out.deliver_at = Some(at);
        self.carry_due_time(name, at, out)
    }

    /// On a backend without native delay, puts the due time `at` of `out` into the
    /// [`DELIVER_AT_ATTRIBUTE`](crate::backend::wire::DELIVER_AT_ATTRIBUTE) attribute, which must fit the attribute
    /// limit beside the application's; nothing on a backend that keeps delays itself.
    pub(crate) fn carry_due_time(&self, name: &str, at: SystemTime, out: &mut OutgoingMessage) -> Result<()> {
        use crate::backend::wire::{format_deliver_at, DELIVER_AT_ATTRIBUTE};
        if self.inner.native.delay {
            return Ok(());
        }
        if out.attributes.len() + 1 > self.inner.caps.max_attributes {
            return Err(Error::invalid(format!(
                "delayed message on topic {name:?} has {} attributes; with the due time's {DELIVER_AT_ATTRIBUTE:?} \
                 attribute the {} backend allows at most {} of the application's",
                out.attributes.len(),
                self.backend_name(),
                self.inner.caps.max_attributes.saturating_sub(1)
            )));
        }
        out.attributes.insert(DELIVER_AT_ATTRIBUTE.to_string(), format_deliver_at(at));
        Ok(())
    }

    /// The longest delay a publish to topic `name` may ask for, and what sets it: the backend's retention ceiling
    /// ([`Capabilities::max_delay`]) or the shortest message retention of this bus's subscriptions to the topic.
    fn delay_limit(&self, name: &str) -> (Duration, String) {
        let mut limit = (
            self.inner.native.max_delay,
            format!("the longest the {} backend keeps a message (Capabilities::max_delay)", self.backend_name()),
        );
        for r in self.runners().iter().filter(|r| r.spec.topic.name == name) {
            if r.spec.config.message_retention < limit.0 {
                limit = (
                    r.spec.config.message_retention,
                    format!("the message_retention of subscription {:?}", r.spec.name),
                );
            }
        }
        limit
    }

    /// Cancels the scheduled message `id` of `topic` (published with a due time not reached yet) in every
    /// subscription: `Ok(true)` when it was removed, `Ok(false)` when none waits. `ErrorKind::Unsupported` on backends
    /// that cannot (those without native delay).
    pub(crate) async fn cancel<T>(&self, topic: &Topic<T>, id: &MessageId) -> Result<bool> {
        self.check_open()?;
        self.publisher(topic.name(), topic.config()).await?.cancel(id).await
    }

    fn validate(&self, name: &str, config: TopicConfig, m: &OutgoingMessage) -> Result<()> {
        validate(&self.inner.caps, self.backend_name(), name, config, m)
    }

    pub(crate) async fn publish<T: Serialize>(
        &self,
        topic: &Topic<T>,
        message: &T,
        options: PublishOptions,
    ) -> Result<MessageId> {
        self.check_open()?;
        // The most common publish there is, so it looks the topic up once and builds no batch vector. The message is
        // still checked before the first use of a topic provisions it.
        let (name, config) = (topic.name(), topic.config());
        let span = trace::send_span(&self.inner.info.producer_system, name);
        let trace = trace::capture(&span);
        let cached = self.cached_publisher(name, config);
        let out = match cached {
            Some(_) => self.outgoing(topic, message, options, trace),
            None => validate_name("topic", name).and_then(|()| self.outgoing(topic, message, options, trace)),
        };
        let mut out = out.inspect_err(|e| record_error(&span, e))?;
        if !span.is_disabled() {
            span.record("messaging.message.id", out.id.as_str());
        }
        let id = out.id.clone();
        // An in-process backend takes the message right here: no future to build, move or instrument.
        if let Some(p) = &cached {
            let now = span.in_scope(|| p.publish_one_now(&mut out));
            if let Some(outcome) = now {
                return outcome.map(|()| id).inspect_err(|e| record_error(&span, e));
            }
        }
        let sent = async {
            let publisher = match cached {
                Some(p) => p,
                None => self.publisher(name, config).await?,
            };
            publisher.publish_one(out).await
        };
        sent.instrument(span.clone()).await.inspect_err(|e| record_error(&span, e))?;
        Ok(id)
    }

    pub(crate) async fn publish_batch<'a, T: Serialize + 'a, I>(
        &self,
        topic: &Topic<T>,
        messages: I,
    ) -> Result<Vec<MessageId>>
    where
        I: IntoIterator<Item = (&'a T, PublishOptions)>,
    {
        self.check_open()?;
        validate_name("topic", topic.name())?;
        let span = trace::send_span(&self.inner.info.producer_system, topic.name());
        let trace = trace::capture(&span);
        let mut batch = messages
            .into_iter()
            .map(|(m, o)| self.outgoing(topic, m, o, trace.clone()))
            .collect::<Result<Vec<_>>>()
            .inspect_err(|e| record_error(&span, e))?;
        span.record("messaging.batch.message_count", batch.len() as i64);
        let ids = batch.iter().map(|m| m.id.clone()).collect();
        let sent = async { self.publisher(topic.name(), topic.config()).await?.publish_many(&mut batch).await };
        sent.instrument(span.clone()).await.inspect_err(|e| record_error(&span, e))?;
        Ok(ids)
    }

    /// Topics in use on this bus, with their configs (for [`Bus::topology`]).
    pub(crate) fn declared_topics(&self) -> Vec<(String, TopicConfig)> {
        self.inner.topics.read().unwrap().iter().map(|(n, e)| (n.clone(), e.config)).collect()
    }

    /// Subscriptions running on this bus (for [`Bus::topology`] and the operator tools).
    pub(crate) fn runners(&self) -> Vec<Arc<Runner>> {
        self.inner.subscriptions.lock().unwrap().running.iter().filter(|r| !r.is_stopped()).cloned().collect()
    }
}

/// Records a failed publish on its span.
fn record_error(span: &tracing::Span, e: &Error) {
    span.record("error.type", trace::error_type(e));
}

/// Releases a reserved subscription key.
struct Reservation<'a> {
    bus: &'a Bus,
    key: (String, String),
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.bus.inner.subscriptions.lock().unwrap().reserved.remove(&self.key);
    }
}

/// Publishing, on the topic declarations (the implementation is the bus's: a declaration holds no connection).
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Topic<T> {
    /// Publishes one message and returns its id once the backend has accepted it.
    pub async fn publish(&self, bus: &Bus, message: &T) -> Result<MessageId> {
        bus.publish(self, message, PublishOptions::default()).await
    }

    /// Publishes one message with attributes and/or an ordering key.
    pub async fn publish_with(&self, bus: &Bus, message: &T, options: PublishOptions) -> Result<MessageId> {
        bus.publish(self, message, options).await
    }

    /// Publishes a batch; returns the ids in input order once the backend has accepted all of them.
    /// The batch is validated whole before anything is sent.
    pub async fn publish_batch<'a, I>(&self, bus: &Bus, messages: I) -> Result<Vec<MessageId>>
    where
        I: IntoIterator<Item = (&'a T, PublishOptions)>,
        T: 'a,
    {
        bus.publish_batch(self, messages).await
    }

    /// Cancels a scheduled message (published with [`PublishOptions::deliver_at`] or
    /// [`PublishOptions::deliver_after`], not yet due) in every subscription: `Ok(true)` when it was removed,
    /// `Ok(false)` when none waits (unknown id, already due or delivered). Where the backend keeps delayed messages
    /// itself (in-memory, SQL); elsewhere an error of kind [`ErrorKind::Unsupported`].
    pub async fn cancel(&self, bus: &Bus, id: &MessageId) -> Result<bool> {
        bus.cancel(self, id).await
    }
}
