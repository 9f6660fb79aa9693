//! The bus's surface for backends and tools (the outbox, operator tools and backend tests): the raw backend, the spec
//! a subscription gets, and publishing in two steps (prepare now, publish later, possibly elsewhere).

use std::sync::Arc;

use serde::Serialize;
use tracing::Instrument;

use super::{record_error, Bus};
use crate::backend::{Backend, OutgoingMessage, SubscriptionSpec};
use crate::error::Result;
use crate::message::PublishOptions;
use crate::name::validate_name;
use crate::subscription::SubscriptionConfig;
use crate::topic::{Topic, TopicConfig};
use crate::trace;

/// For backends and tools: the outbox, operator tools and backend tests.
impl Bus {
    /// The backend itself (the outermost layer), for tools and backend tests that need the raw driver.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The spec a subscription of `topic` named `name` gets on this bus (names mapped, config overrides applied).
    pub fn subscription_spec<T>(&self, topic: &Topic<T>, name: &str, config: SubscriptionConfig) -> SubscriptionSpec {
        let config = match self.inner.settings.subscription_override(topic.name(), name) {
            Some(o) => config.apply(o),
            None => config,
        };
        SubscriptionSpec::new(
            self.topic_spec(topic.name(), topic.config()),
            name,
            self.inner.settings.subscription_resource_name(topic.name(), name),
            config,
        )
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
        self.outgoing(topic, message, options, trace::capture(&tracing::Span::none()))
    }

    /// Publishes messages made by [`Bus::prepare`] (possibly by another process, as an outbox relay does) to the
    /// topic `name` with `config`; they are validated again against this backend's limits first. The ids are kept,
    /// so exactly-once topics de-duplicate a republish. A message's due time
    /// ([`OutgoingMessage::deliver_at`](crate::backend::OutgoingMessage::deliver_at), or the
    /// [`DELIVER_AT_ATTRIBUTE`](crate::backend::wire::DELIVER_AT_ATTRIBUTE) attribute [`Bus::prepare`] adds on a
    /// backend without native delay) is published as this bus carries it: kept by a backend with native delay, in
    /// the attribute otherwise.
    pub async fn publish_prepared(
        &self,
        name: &str,
        config: TopicConfig,
        mut batch: Vec<OutgoingMessage>,
    ) -> Result<()> {
        use crate::backend::wire::{parse_deliver_at, DELIVER_AT_ATTRIBUTE};
        self.check_open()?;
        let now = std::time::SystemTime::now();
        for m in &mut batch {
            // The attribute is core's own (the reserved-name rule is for the application's), so it is set aside
            // while the message is checked, then put back where this bus needs it.
            let carried = m.attributes.remove(DELIVER_AT_ATTRIBUTE);
            self.validate(name, config, m)?;
            let at = m.deliver_at.or_else(|| carried.as_deref().and_then(parse_deliver_at));
            if let Some(at) = at.filter(|at| *at > now) {
                m.deliver_at = Some(at);
                self.carry_due_time(name, at, m)?;
            }
        }
        let span = trace::send_span(&self.backend_info().producer_system, name);
        span.record("messaging.batch.message_count", batch.len() as i64);
        let sent = async { self.publisher(name, config).await?.publish_many(&mut batch).await };
        sent.instrument(span.clone()).await.inspect_err(|e| record_error(&span, e))
    }
}
