//! A subscription's backlog with its scheduled messages apart: what [`SubscriptionDriver::backlog_detail`] reports
//! and [`crate::Subscription::backlog_detail`] returns.
//!
//! [`SubscriptionDriver::backlog_detail`]: super::SubscriptionDriver::backlog_detail

/// A subscription's backlog, split where the backend can tell; each figure is `None` where it cannot (never a
/// guess).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BacklogDetail {
    /// Messages not yet acked or dead-lettered (ready, scheduled, leased or waiting out a retry backoff): what
    /// [`crate::Subscription::backlog`] returns.
    pub total: Option<u64>,
    /// Of those, scheduled: published with a due time ([`crate::PublishOptions::deliver_at`]) not reached yet and
    /// never delivered. A message waiting out a retry backoff, or leased to a handler, is not scheduled. Known where
    /// the backend keeps delays itself ([`crate::Capabilities::delay`]: the in-memory bus and SQL); `None` where the
    /// runtime holds delayed messages (AWS, Google Pub/Sub, NATS), since the broker counts a held message as one in
    /// flight and the holds are spread over the subscribing processes.
    pub scheduled: Option<u64>,
}

impl BacklogDetail {
    /// A backlog of `total` messages, none known to be scheduled (`scheduled` unknown).
    pub fn new(total: Option<u64>) -> Self {
        Self { total, scheduled: None }
    }

    /// With `scheduled` of the messages scheduled.
    pub fn with_scheduled(mut self, scheduled: Option<u64>) -> Self {
        self.scheduled = scheduled;
        self
    }

    /// The messages that are not scheduled (ready, leased or backing off), where both figures are known.
    pub fn due(&self) -> Option<u64> {
        Some(self.total?.saturating_sub(self.scheduled?))
    }
}
