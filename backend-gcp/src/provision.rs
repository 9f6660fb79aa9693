//! Provisioning: topic = Pub/Sub topic; subscription = Pub/Sub subscription with ack deadline, retention, ordering,
//! exactly-once, and always a dead-letter policy (which is also what makes the service fill `delivery_attempt`).
//! DLQ = a dead-letter topic per subscription plus a subscription on it, so dead letters stay readable and
//! redrivable. `auto` creates what is missing (idempotently); `verify` reads and reports differences; `off` trusts
//! the names.

use google_cloud_pubsub::model::{DeadLetterPolicy, Subscription, Topic as GTopic};
use google_cloud_wkt as wkt;
use tidings_core::backend::time::secs_ceil;
use tidings_core::backend::{SubscriptionSpec, TopicSpec};
use tidings_core::{Error, ErrorKind, Result};

use crate::config::Provisioning;
use crate::error::{gcp, is_already_exists};
use crate::Shared;

/// Pub/Sub accepts max delivery attempts in this range only; the runtime's client-side rule covers the rest.
pub const NATIVE_ATTEMPTS: std::ops::RangeInclusive<u32> = 5..=100;
/// Ack deadlines Pub/Sub accepts, in seconds.
const ACK_DEADLINE_SECS: std::ops::RangeInclusive<u64> = 10..=600;
/// Retention Pub/Sub accepts, in seconds (10 minutes to 7 days).
const RETENTION_SECS: std::ops::RangeInclusive<u64> = 600..=604_800;

/// Full resource paths of one subscription.
#[derive(Debug, Clone)]
pub struct Paths {
    pub topic: String,
    pub subscription: String,
    pub dlq_topic: String,
    pub dlq_subscription: String,
}

pub fn topic_path(s: &Shared, spec: &TopicSpec) -> String {
    format!("projects/{}/topics/{}", s.project, spec.resource)
}

pub fn paths(s: &Shared, spec: &SubscriptionSpec) -> Paths {
    let p = &s.project;
    Paths {
        topic: topic_path(s, &spec.topic),
        subscription: format!("projects/{p}/subscriptions/{}", spec.resource),
        dlq_topic: format!("projects/{p}/topics/{}-dlq", spec.resource),
        dlq_subscription: format!("projects/{p}/subscriptions/{}-dlq", spec.resource),
    }
}

/// The native max delivery attempts: the declared attempts where Pub/Sub accepts them; otherwise the nearest bound
/// (below 5 the runtime dead-letters first; above 100 and for infinite retries the service stops at 100).
pub fn native_attempts(spec: &SubscriptionSpec) -> i32 {
    let want = spec.config.retry.max_attempts().unwrap_or(*NATIVE_ATTEMPTS.end());
    want.clamp(*NATIVE_ATTEMPTS.start(), *NATIVE_ATTEMPTS.end()) as i32
}

/// The subscription the code declares.
pub fn desired(s: &Shared, spec: &SubscriptionSpec) -> Subscription {
    let p = paths(s, spec);
    let c = spec.config;
    Subscription::new()
        .set_name(p.subscription)
        .set_topic(p.topic)
        .set_ack_deadline_seconds(
            secs_ceil(c.ack_deadline).clamp(*ACK_DEADLINE_SECS.start(), *ACK_DEADLINE_SECS.end()) as i32
        )
        .set_message_retention_duration(wkt::Duration::clamp(
            secs_ceil(c.message_retention).clamp(*RETENTION_SECS.start(), *RETENTION_SECS.end()) as i64,
            0,
        ))
        .set_enable_message_ordering(spec.topic.config.ordered)
        .set_enable_exactly_once_delivery(spec.topic.config.is_exactly_once())
        .set_dead_letter_policy(
            DeadLetterPolicy::new().set_dead_letter_topic(p.dlq_topic).set_max_delivery_attempts(native_attempts(spec)),
        )
}

pub async fn topic(s: &Shared, path: &str) -> Result<()> {
    match s.config.provisioning {
        Provisioning::Off => Ok(()),
        Provisioning::Verify => {
            s.calls.count("pubsub:GetTopic");
            s.topics.get_topic().set_topic(path).send().await.map_err(|e| not_found("topic", path, e))?;
            Ok(())
        }
        Provisioning::Auto => {
            s.calls.count("pubsub:CreateTopic");
            match s.topics.create_topic().with_request(GTopic::new().set_name(path)).send().await {
                Ok(_) => Ok(()),
                Err(e) if is_already_exists(&e) => Ok(()),
                Err(e) => Err(gcp("CreateTopic", path, e)),
            }
        }
    }
}

fn not_found(what: &str, path: &str, e: google_cloud_pubsub::Error) -> Error {
    let e = gcp("Get", path, e);
    if e.kind() == ErrorKind::NotFound {
        Error::new(ErrorKind::NotFound, format!("gcp verify: {what} {path} does not exist"))
    } else {
        e
    }
}

pub async fn subscription(s: &Shared, spec: &SubscriptionSpec) -> Result<Paths> {
    let p = paths(s, spec);
    topic(s, &p.topic).await?;
    topic(s, &p.dlq_topic).await?;
    let dlq_sub = Subscription::new()
        .set_name(&p.dlq_subscription)
        .set_topic(&p.dlq_topic)
        .set_ack_deadline_seconds(60)
        .set_message_retention_duration(wkt::Duration::clamp(*RETENTION_SECS.end() as i64, 0));
    let want = desired(s, spec);
    match s.config.provisioning {
        Provisioning::Off => {}
        Provisioning::Auto => {
            for sub in [dlq_sub, want] {
                let name = sub.name.clone();
                s.calls.count("pubsub:CreateSubscription");
                match s.subs.create_subscription().with_request(sub).send().await {
                    Ok(_) => {}
                    Err(e) if is_already_exists(&e) => {}
                    Err(e) => return Err(gcp("CreateSubscription", &name, e)),
                }
            }
        }
        Provisioning::Verify => {
            s.calls.count("pubsub:GetSubscription");
            s.subs
                .get_subscription()
                .set_subscription(&p.dlq_subscription)
                .send()
                .await
                .map_err(|e| not_found("subscription", &p.dlq_subscription, e))?;
            s.calls.count("pubsub:GetSubscription");
            let have = s
                .subs
                .get_subscription()
                .set_subscription(&p.subscription)
                .send()
                .await
                .map_err(|e| not_found("subscription", &p.subscription, e))?;
            verify(&want, &have)?;
        }
    }
    Ok(p)
}

/// Compares the settings tidings declares; the error names the subscription, the setting and both values.
pub fn verify(want: &Subscription, have: &Subscription) -> Result<()> {
    let dl = |s: &Subscription| {
        s.dead_letter_policy.as_ref().map(|d| format!("{} after {}", d.dead_letter_topic, d.max_delivery_attempts))
    };
    let retention = |s: &Subscription| s.message_retention_duration.as_ref().map(|d| d.seconds());
    let checks: [(&str, String, String); 6] = [
        ("topic", have.topic.clone(), want.topic.clone()),
        ("ack_deadline_seconds", have.ack_deadline_seconds.to_string(), want.ack_deadline_seconds.to_string()),
        ("message_retention_duration", format!("{:?}", retention(have)), format!("{:?}", retention(want))),
        ("enable_message_ordering", have.enable_message_ordering.to_string(), want.enable_message_ordering.to_string()),
        (
            "enable_exactly_once_delivery",
            have.enable_exactly_once_delivery.to_string(),
            want.enable_exactly_once_delivery.to_string(),
        ),
        ("dead_letter_policy", format!("{:?}", dl(have)), format!("{:?}", dl(want))),
    ];
    for (setting, have_v, want_v) in checks {
        if have_v != want_v {
            return Err(Error::new(
                ErrorKind::Mismatch,
                format!(
                    "gcp verify: subscription {}: setting {setting} is {have_v:?} but the code declares {want_v:?}",
                    want.name
                ),
            ));
        }
    }
    Ok(())
}
