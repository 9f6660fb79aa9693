//! The backlog gauges: a task per running subscription samples, on an interval, how many messages wait (and how many
//! of them are scheduled for later), the age of the oldest one not yet acked and the dead-letter queue's depth, where
//! the backend can tell (its operator statistics, [`crate::admin::Admin::stats`], or else
//! [`crate::SubscriptionDriver::backlog_detail`]). It runs only while a recorder is installed, so an application
//! without metrics makes no extra API calls. A gauge the backend never reports is never registered, so a recorder
//! shows no made-up zero for it.

use std::sync::Arc;
use std::time::Duration;

use ::metrics::{gauge, Gauge};
use tokio_util::sync::CancellationToken;

use super::{BACKLOG, DEAD_LETTERS, OLDEST_UNACKED_AGE, SCHEDULED};
use crate::admin::Admin;
use crate::backend::calls::{scoped, Scope};
use crate::backend::{SubscriptionDriver, SubscriptionSpec};

/// How often the backlog gauges are sampled unless [`crate::BusBuilder::backlog_sample_interval`] says otherwise.
pub const DEFAULT_BACKLOG_INTERVAL: Duration = Duration::from_secs(15);

/// Where the figures come from.
pub(crate) enum Source {
    Admin(Arc<dyn Admin>),
    Driver(Arc<dyn SubscriptionDriver>),
    /// The backend cannot tell.
    None,
}

/// Starts sampling `spec`'s figures every `interval` until `stop` is cancelled; does nothing while no recorder is
/// installed or when `interval` is zero.
pub(crate) fn start(
    backend: &str,
    spec: SubscriptionSpec,
    source: Source,
    interval: Duration,
    stop: CancellationToken,
) {
    if interval.is_zero() || matches!(source, Source::None) || !super::recording() {
        return;
    }
    let labels = [("backend", backend), ("topic", &spec.topic.name), ("subscription", &spec.name)]
        .map(|(k, v)| ::metrics::Label::new(k, v.to_string()))
        .to_vec();
    let (backlog, oldest, dead) = (
        gauge!(BACKLOG, labels.clone()),
        gauge!(OLDEST_UNACKED_AGE, labels.clone()),
        gauge!(DEAD_LETTERS, labels.clone()),
    );
    // Registered at its first known value: on a backend that cannot tell, the series does not exist.
    let mut scheduled: Option<Gauge> = None;
    let scope = Scope::subscription(&spec.topic.name, &spec.name);
    tokio::spawn(async move {
        loop {
            let sample = scoped(scope.clone(), async {
                match &source {
                    Source::Admin(a) => {
                        a.stats(&spec).await.map(|s| (s.backlog, s.scheduled, s.oldest_unacked, s.dead_letters))
                    }
                    Source::Driver(d) => d.backlog_detail().await.map(|b| (b.total, b.scheduled, None, None)),
                    Source::None => Ok((None, None, None, None)),
                }
            });
            // A sample in flight ends with the subscription, so no call is counted after it stopped.
            let sampled = tokio::select! {
                r = sample => r,
                _ = stop.cancelled() => return,
            };
            match sampled {
                Ok((b, s, o, d)) => {
                    if let Some(b) = b {
                        backlog.set(b as f64);
                    }
                    if let Some(s) = s {
                        scheduled.get_or_insert_with(|| gauge!(SCHEDULED, labels.clone())).set(s as f64);
                    }
                    if let Some(o) = o {
                        oldest.set(o.as_secs_f64());
                    }
                    if let Some(d) = d {
                        dead.set(d as f64);
                    }
                }
                Err(e) => tracing::debug!(subscription = %spec.name, error = %e, "sampling the backlog failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}
