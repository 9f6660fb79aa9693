//! The outbox row: what is stored per message, and its conversion back to a prepared message.

use bytes::Bytes;
use tidings_core::backend::time::{from_micros, micros, micros_ceil};
use tidings_core::backend::OutgoingMessage;
use tidings_core::{Attributes, Error, MessageId, Result, TopicConfig};

/// Columns shared by both databases: seq (auto), topic, exactly_once, ordered, message_id, payload, attributes
/// (JSON text; the trace context captured when the row was written sits beside the application's attributes under
/// reserved `tidings.trace.*` keys), ordering_key, created_at and deliver_at (microseconds since the Unix epoch;
/// deliver_at is the due time of a delayed message, NULL for one delivered at once; added in 0.2 by `migrate`).
pub(crate) const COLUMNS: &str =
    "seq, topic, exactly_once, ordered, message_id, payload, attributes, ordering_key, created_at, deliver_at";

/// A row about to be inserted.
pub(crate) struct NewRow {
    pub topic: String,
    pub exactly_once: bool,
    pub ordered: bool,
    pub message_id: String,
    pub payload: Vec<u8>,
    pub attributes: String,
    pub ordering_key: Option<String>,
    pub created_at: i64,
    pub deliver_at: Option<i64>,
}

impl NewRow {
    pub fn new(topic: &str, config: TopicConfig, mut m: OutgoingMessage) -> Result<Self> {
        // The due time is the deliver_at column; the relay's bus carries it as that bus needs (Bus::publish_prepared),
        // so the attribute Bus::prepare adds on a bus without native delay is not stored.
        m.attributes.remove(tidings_core::backend::wire::DELIVER_AT_ATTRIBUTE);
        Ok(NewRow {
            topic: topic.to_string(),
            exactly_once: config.is_exactly_once(),
            ordered: config.ordered,
            message_id: m.id.to_string(),
            payload: m.payload.to_vec(),
            attributes: serde_json::to_string(&*tidings_core::trace::attributes_with_trace(
                &m.attributes,
                m.trace.as_ref(),
            ))?,
            ordering_key: m.ordering_key.as_deref().map(str::to_string),
            created_at: micros(m.publish_time),
            deliver_at: m.deliver_at.map(micros_ceil),
        })
    }
}

/// A claimed row.
pub(crate) struct Claimed {
    pub seq: i64,
    pub config: TopicConfig,
    pub message: OutgoingMessage,
}

impl Claimed {
    pub fn from_row<R: sqlx::Row>(r: &R) -> Result<Self>
    where
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        bool: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        Vec<u8>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        Option<String>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        Option<i64>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    {
        let get = |e: sqlx::Error| crate::db_error("reading an outbox row", e);
        let exactly_once: bool = r.try_get("exactly_once").map_err(get)?;
        let config = if exactly_once { TopicConfig::exactly_once() } else { TopicConfig::at_least_once() };
        let config = if r.try_get("ordered").map_err(get)? { config.ordered() } else { config };
        let attributes: String = r.try_get("attributes").map_err(get)?;
        let attributes: Attributes = serde_json::from_str(&attributes)
            .map_err(|e| Error::invalid(format!("outbox row has invalid attributes JSON {attributes:?}: {e}")))?;
        let (attributes, trace) = tidings_core::trace::split_trace(attributes);
        let created_at: i64 = r.try_get("created_at").map_err(get)?;
        let id: String = r.try_get("message_id").map_err(get)?;
        let key: Option<String> = r.try_get("ordering_key").map_err(get)?;
        let payload: Vec<u8> = r.try_get("payload").map_err(get)?;
        let deliver_at: Option<i64> = r.try_get("deliver_at").map_err(get)?;
        Ok(Claimed {
            seq: r.try_get("seq").map_err(get)?,
            config,
            message: OutgoingMessage::new(
                MessageId::from(id),
                Bytes::from(payload),
                attributes,
                key.map(Into::into),
                from_micros(created_at),
            )
            .with_trace(trace)
            .with_deliver_at(deliver_at.map(from_micros)),
        })
    }
}

/// Publishes claimed rows of one topic in order, one run of equal topic configs at a time.
/// Records each row's relay lag (insert to publish) in `lag` once its publish was accepted.
pub(crate) async fn publish(
    bus: &tidings_core::Bus,
    topic: &str,
    rows: Vec<Claimed>,
    lag: &metrics::Histogram,
) -> Result<()> {
    let mut rows = rows.into_iter().peekable();
    while let Some(first) = rows.next() {
        let config = first.config;
        let mut batch = vec![first.message];
        while let Some(next) = rows.next_if(|r| r.config == config) {
            batch.push(next.message);
        }
        let inserted: Vec<std::time::SystemTime> = batch.iter().map(|m| m.publish_time).collect();
        bus.publish_prepared(topic, config, batch).await?;
        let now = std::time::SystemTime::now();
        for t in inserted {
            lag.record(now.duration_since(t).unwrap_or_default());
        }
    }
    Ok(())
}
