//! Provisioning: topic = a stream (`Limits` retention, `MaxAge`, a de-duplication window on `Nats-Msg-Id`);
//! subscription = a durable pull consumer (`DeliverPolicy::New`, explicit acks, `AckWait` = ack deadline,
//! `MaxDeliver` = a backstop above the runtime's attempts, `MaxAckPending` unlimited) plus a dead-letter stream.
//! `auto` creates what is missing and converges settings, `verify` only reads and reports differences, `off` makes no
//! JetStream API call at all.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, IntoConsumerConfig};
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tidings_core::backend::{SubscriptionSpec, TopicSpec};
use tidings_core::{Error, ErrorKind, Result};

use crate::config::{Provisioning, Storage};
use crate::error::{api, is_not_found, nats};
use crate::names::{SubNames, TopicNames};
use crate::Shared;

/// `MaxAge` of a topic's stream when created: the longest retention a subscription may ask for without an update.
pub const STREAM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// De-duplication window on `Nats-Msg-Id` of exactly-once topics (JetStream's default, 2 minutes, elsewhere).
pub const EXACTLY_ONCE_WINDOW: Duration = Duration::from_secs(600);
const DEFAULT_WINDOW: Duration = Duration::from_secs(120);
/// `MaxAckPending` of every consumer: unlimited. JetStream counts a message `Nak`ed with a delay as pending until it
/// is redelivered, so messages held for their due time (a day per `Nak`) or waiting out a retry's backoff would fill
/// any limit and starve the due ones behind them. Flow control is the runtime's: each pull asks for no more than the
/// free handler slots, and on ordered topics core's sequencer stops receiving while its parked deliveries are at its
/// limit (10 per handler slot, at least 1,000).
pub(crate) const UNLIMITED_ACK_PENDING: i64 = -1;
/// What tidings 0.1 set as `MaxAckPending` (ten times the handler slots, at least 1,000): under
/// `provisioning = verify` such a consumer is still accepted, with a warning naming the limit it puts on held
/// messages.
pub(crate) const LEGACY_MIN_ACK_PENDING: i64 = 1000;

/// `MaxDeliver` of a subscription: one more delivery than the runtime's attempts (the runtime dead-letters first,
/// with the reason); -1 (unlimited) for infinite retries.
pub(crate) fn max_deliver(spec: &SubscriptionSpec) -> i64 {
    spec.config.retry.max_attempts().map_or(-1, |a| i64::from(a) + 1)
}

/// The least finite `MaxAckPending` `verify` accepts: what 0.1 set, ten times what the handlers hold at once (a batch
/// handler's batches count by their messages: [`SubscriptionSpec::max_in_flight`]), at least 1,000.
pub(crate) fn legacy_max_ack_pending(spec: &SubscriptionSpec) -> i64 {
    (spec.max_in_flight() as i64).saturating_mul(10).max(LEGACY_MIN_ACK_PENDING)
}

fn window(spec: &TopicSpec) -> Duration {
    if spec.config.is_exactly_once() {
        EXACTLY_ONCE_WINDOW
    } else {
        DEFAULT_WINDOW
    }
}

fn storage(s: &Shared) -> StorageType {
    match s.config.storage {
        Storage::File => StorageType::File,
        Storage::Memory => StorageType::Memory,
    }
}

/// A JetStream API call: `Ok(None)` when the answer is "not found".
pub(crate) async fn call<T: Serialize + ?Sized, V: DeserializeOwned>(
    s: &Shared,
    op: &'static str,
    subject: String,
    resource: &str,
    body: &T,
) -> Result<Option<V>> {
    s.calls.count(op);
    let r: Response<V> = s.js.request(subject, body).await.map_err(|e| {
        let no_responders = matches!(e.kind(), async_nats::jetstream::context::RequestErrorKind::NoResponders);
        if no_responders {
            Error::config(format!(
                "nats: {op} on {resource}: no JetStream answered; is JetStream enabled on the server (nats-server -js) \
                 and for this account?"
            ))
        } else {
            nats(op, resource, e, true)
        }
    })?;
    match r {
        Response::Ok(v) => Ok(Some(v)),
        Response::Err { error } if is_not_found(&error) => Ok(None),
        Response::Err { error } => Err(api(op, resource, &error)),
    }
}

pub(crate) async fn stream_info(s: &Shared, name: &str) -> Result<Option<stream::Info>> {
    call(s, "STREAM.INFO", format!("STREAM.INFO.{name}"), name, &json!({})).await
}

fn missing(what: &str, name: &str, provisioning: Provisioning) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("nats: {what} {name:?} does not exist and nats.provisioning is {provisioning:?}, so tidings does not create it"),
    )
}

fn mismatch(
    what: &str,
    name: &str,
    setting: &str,
    declared: impl std::fmt::Debug,
    actual: impl std::fmt::Debug,
) -> Error {
    Error::new(
        ErrorKind::Mismatch,
        format!("nats: {what} {name:?} has {setting} = {actual:?}, but the code declares {declared:?}"),
    )
}

/// Ensures (or verifies) a stream with these subjects, at least this `MaxAge` and at least this de-duplication
/// window.
async fn ensure_stream(s: &Shared, name: &str, subject: String, max_age: Duration, dup: Duration) -> Result<()> {
    let existing = stream_info(s, name).await?;
    match (s.config.provisioning, existing) {
        (Provisioning::Off, _) => Ok(()),
        (Provisioning::Verify, None) => Err(missing("stream", name, Provisioning::Verify)),
        (Provisioning::Verify, Some(info)) => {
            let c = info.config;
            if !c.subjects.contains(&subject) {
                return Err(mismatch("stream", name, "subjects", vec![subject], c.subjects));
            }
            if !c.max_age.is_zero() && c.max_age < max_age {
                return Err(mismatch("stream", name, "max_age (at least)", max_age, c.max_age));
            }
            if c.duplicate_window < dup {
                return Err(mismatch("stream", name, "duplicate_window (at least)", dup, c.duplicate_window));
            }
            Ok(())
        }
        (Provisioning::Auto, None) => {
            let config = stream::Config {
                name: name.to_string(),
                subjects: vec![subject],
                retention: RetentionPolicy::Limits,
                discard: DiscardPolicy::Old,
                max_age,
                duplicate_window: dup,
                storage: storage(s),
                num_replicas: s.config.replicas,
                ..Default::default()
            };
            let created: Option<stream::Info> =
                call(s, "STREAM.CREATE", format!("STREAM.CREATE.{name}"), name, &config).await?;
            created.map(drop).ok_or_else(|| Error::backend(format!("nats: STREAM.CREATE {name}: not found"), true))
        }
        (Provisioning::Auto, Some(info)) => {
            let mut c = info.config;
            let mut changed = false;
            if !c.subjects.contains(&subject) {
                c.subjects.push(subject);
                changed = true;
            }
            if !c.max_age.is_zero() && c.max_age < max_age {
                c.max_age = max_age;
                changed = true;
            }
            if c.duplicate_window < dup {
                c.duplicate_window = dup;
                changed = true;
            }
            if changed {
                tracing::info!(stream = name, "converging stream settings");
                let _: Option<stream::Info> =
                    call(s, "STREAM.UPDATE", format!("STREAM.UPDATE.{name}"), name, &c).await?;
            }
            Ok(())
        }
    }
}

/// Ensures (or verifies) a topic's stream.
pub(crate) async fn topic(s: &Shared, spec: &TopicSpec) -> Result<TopicNames> {
    let names = TopicNames::of(spec)?;
    if s.config.provisioning == Provisioning::Off {
        return Ok(names);
    }
    ensure_stream(s, &names.stream, names.filter(), STREAM_RETENTION, window(spec)).await?;
    Ok(names)
}

/// The consumer a subscription must have.
pub(crate) fn consumer_config(spec: &SubscriptionSpec) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(spec.resource.clone()),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.config.ack_deadline,
        max_deliver: max_deliver(spec),
        max_ack_pending: UNLIMITED_ACK_PENDING,
        ..Default::default()
    }
}

/// Ensures (or verifies) a subscription: its topic's stream (with `MaxAge` at least the retention), its consumer,
/// and its dead-letter stream.
pub(crate) async fn subscription(s: &Shared, spec: &SubscriptionSpec) -> Result<SubNames> {
    let names = SubNames::of(spec)?;
    if s.config.provisioning == Provisioning::Off {
        return Ok(names);
    }
    let retention = spec.config.message_retention.max(STREAM_RETENTION);
    let t = &names.topic.stream;
    ensure_stream(s, t, names.topic.filter(), retention, window(&spec.topic)).await?;
    ensure_stream(s, &names.dlq_stream, names.dlq_subject(), retention, DEFAULT_WINDOW).await?;
    let want = consumer_config(spec);
    let name = &names.consumer;
    let info: Option<consumer::Info> =
        call(s, "CONSUMER.INFO", format!("CONSUMER.INFO.{t}.{name}"), name, &json!({})).await?;
    match (s.config.provisioning, info) {
        (Provisioning::Verify, None) => return Err(missing("consumer", name, Provisioning::Verify)),
        (Provisioning::Verify, Some(info)) => {
            verify_consumer(name, &want, &info.config, legacy_max_ack_pending(spec))?;
            warn_limited_ack_pending(name, info.config.max_ack_pending);
        }
        (_, info) => {
            if info.as_ref().is_some_and(|i| i.config.deliver_policy != DeliverPolicy::New) {
                return Err(mismatch(
                    "consumer",
                    name,
                    "deliver_policy",
                    DeliverPolicy::New,
                    info.unwrap().config.deliver_policy,
                ));
            }
            // `auto` converges a finite `MaxAckPending` (0.1's) to unlimited: a consumer update JetStream allows.
            let same = info.as_ref().is_some_and(|i| {
                i.config.max_ack_pending == want.max_ack_pending
                    && verify_consumer(name, &want, &i.config, want.max_ack_pending).is_ok()
            });
            if !same {
                let body = json!({ "stream_name": t, "config": want.clone().into_consumer_config() });
                let created: Option<consumer::Info> =
                    call(s, "CONSUMER.CREATE", format!("CONSUMER.CREATE.{t}.{name}"), name, &body).await?;
                created.ok_or_else(|| {
                    Error::backend(format!("nats: CONSUMER.CREATE {name}: stream {t} not found"), true)
                })?;
            }
        }
    }
    Ok(names)
}

/// Under `verify`, a consumer with a finite `MaxAckPending` (made by tidings 0.1, or by its operator) is accepted; this
/// says what that costs.
fn warn_limited_ack_pending(name: &str, max_ack_pending: i64) {
    if max_ack_pending > 0 {
        tracing::warn!(
            consumer = name,
            max_ack_pending,
            "nats: the consumer's MaxAckPending is finite (tidings now sets -1, unlimited); JetStream counts \
             messages held for their due time or their retry's backoff as pending, so once that many are held, due \
             messages wait until one of them is redelivered; update the consumer or let provisioning = auto do it"
        );
    }
}

/// Checks a consumer against the one declared; `min_ack_pending` is the least `MaxAckPending` accepted besides
/// unlimited (-1).
fn verify_consumer(
    name: &str,
    want: &consumer::pull::Config,
    got: &consumer::Config,
    min_ack_pending: i64,
) -> Result<()> {
    if got.deliver_subject.is_some() {
        return Err(mismatch(
            "consumer",
            name,
            "deliver_subject (a push consumer)",
            None::<String>,
            &got.deliver_subject,
        ));
    }
    if got.ack_policy != want.ack_policy {
        return Err(mismatch("consumer", name, "ack_policy", want.ack_policy, got.ack_policy));
    }
    if got.ack_wait != want.ack_wait {
        return Err(mismatch("consumer", name, "ack_wait", want.ack_wait, got.ack_wait));
    }
    if got.max_deliver != want.max_deliver {
        return Err(mismatch("consumer", name, "max_deliver", want.max_deliver, got.max_deliver));
    }
    let unlimited = got.max_ack_pending == UNLIMITED_ACK_PENDING;
    if !unlimited && (min_ack_pending == UNLIMITED_ACK_PENDING || got.max_ack_pending < min_ack_pending) {
        let declared = match min_ack_pending {
            UNLIMITED_ACK_PENDING => "-1 (unlimited)".to_string(),
            min => format!("-1 (unlimited) or at least {min}"),
        };
        return Err(mismatch("consumer", name, "max_ack_pending", declared, got.max_ack_pending));
    }
    if !got.filter_subject.is_empty() {
        return Err(mismatch("consumer", name, "filter_subject", "", &got.filter_subject));
    }
    Ok(())
}

/// `num_pending + num_ack_pending` of a consumer: messages not yet acked or terminated.
pub(crate) async fn backlog(s: &Shared, names: &SubNames) -> Result<Option<u64>> {
    let (t, name) = (&names.topic.stream, &names.consumer);
    let info: Option<consumer::Info> =
        call(s, "CONSUMER.INFO", format!("CONSUMER.INFO.{t}.{name}"), name, &json!({})).await?;
    Ok(info.map(|i| i.num_pending + i.num_ack_pending as u64))
}
