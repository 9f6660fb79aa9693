//! The dead-letter backstop: JetStream stops redelivering a message after `MaxDeliver` deliveries and says so in an
//! advisory (`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`), but keeps no dead-letter queue. While
//! a subscription's driver lives, it listens to these advisories and copies each such message to the dead-letter
//! stream (de-duplicated per message, so several processes store it once). The runtime normally dead-letters first,
//! with the reason; this catches what it could not, such as a consumer that crashes on every delivery.

use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt;
use serde::Deserialize;

use crate::meta::{headers, micros, split, Meta};
use crate::names::SubNames;
use crate::Shared;

#[derive(Deserialize, Clone, Copy)]
struct Advisory {
    stream_seq: u64,
    deliveries: u64,
}

/// Listens until the returned task is aborted.
pub fn start(s: Arc<Shared>, names: SubNames) -> tokio::task::JoinHandle<()> {
    tokio::spawn(tidings_core::backend::calls::scoped(tidings_core::backend::calls::Scope::current(), async move {
        let subject = format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}", names.topic.stream, names.consumer);
        let mut sub = match s.client.subscribe(subject.clone()).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(%subject, error = %e, "cannot listen for max-deliveries advisories");
                return;
            }
        };
        while let Some(m) = sub.next().await {
            let Ok(a) = serde_json::from_slice::<Advisory>(&m.payload) else { continue };
            if let Err(e) = copy(&s, &names, a).await {
                tracing::error!(consumer = %names.consumer, seq = a.stream_seq, error = %e,
                    "could not dead-letter a message past MaxDeliver; it stays in the stream");
            }
        }
    }))
}

async fn copy(s: &Shared, names: &SubNames, a: Advisory) -> Result<(), async_nats::Error> {
    let stream = s.js.get_stream_no_info(&names.topic.stream).await?;
    s.calls.count("STREAM.MSG.GET");
    let m = stream.get_raw_message(a.stream_seq).await?;
    let (meta, msg_id, attributes) = split(Some(&m.headers));
    let mut meta = meta.unwrap_or_default();
    if meta.id.is_empty() {
        meta.id = msg_id.unwrap_or_else(|| format!("{}-{}", names.topic.stream, a.stream_seq));
    }
    if meta.ts == 0 {
        meta.ts = micros(m.time.into());
    }
    let meta = Meta {
        reason: Some(format!(
            "delivered {} times without being settled (the consumer's MaxDeliver); moved by the backstop",
            a.deliveries
        )),
        attempts: Some(a.deliveries.min(u64::from(u32::MAX)) as u32),
        dlq_ts: Some(micros(SystemTime::now())),
        target: None,
        ..meta
    };
    let h = headers(&format!("{}-dlq-{}-max", meta.id, a.stream_seq), &meta, &attributes);
    s.calls.count("PUBLISH.ACKS");
    s.js.publish_with_headers(names.dlq_subject(), h, m.payload).await?.await?;
    Ok(())
}
