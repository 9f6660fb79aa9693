//! Publishing: one `PublishBatch` call per batch the portable layer hands over (it coalesces concurrent publishes
//! over `aws.publish_linger`, sizes batches to 10 entries and 256 KiB, and retries). The SDK returns `Ok` even when
//! entries failed, so each entry's result is reported on its own.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sns::operation::publish_batch::PublishBatchOutput;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use tidings_core::backend::{OutgoingMessage, PublishReport, TopicDriver};
use tidings_core::{Error, Result};

use crate::error::{entry, sdk};
use crate::meta::{micros, Meta, META_ATTRIBUTE};
use crate::provision::TopicRes;
use crate::Shared;

/// Entries per `PublishBatch`.
pub(crate) const MAX_ENTRIES: usize = 10;
/// Bytes per `PublishBatch` (all entries together).
pub(crate) const MAX_BATCH_BYTES: usize = 262_144;

/// Publisher of one SNS topic.
#[derive(Debug)]
pub struct AwsTopic {
    shared: Arc<Shared>,
    topic: TopicRes,
    ordered: bool,
}

impl AwsTopic {
    pub(crate) fn new(shared: Arc<Shared>, topic: TopicRes, ordered: bool) -> Self {
        Self { shared, topic, ordered }
    }
}

#[async_trait]
impl TopicDriver for AwsTopic {
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport> {
        let (s, topic) = (&self.shared, &self.topic);
        publish_with(&topic.arn, topic.fifo, self.ordered, batch, |entries| async move {
            s.calls.count_bytes("sns:PublishBatch", entries.iter().map(|e| e.message().len()).sum());
            let out = s
                .sns
                .publish_batch()
                .topic_arn(&topic.arn)
                .set_publish_batch_request_entries(Some(entries))
                .send()
                .await;
            out.map_err(|e| sdk("PublishBatch", &topic.arn, e))
        })
        .await
    }
}

fn to_entry(i: usize, m: &OutgoingMessage, fifo: bool, ordered: bool) -> Result<PublishBatchRequestEntry> {
    let body = std::str::from_utf8(&m.payload)
        .map_err(|_| Error::invalid(format!("message {} is not UTF-8; SNS bodies must be text", m.id)))?;
    if body.is_empty() {
        // AWS rejects it; LocalStack accepts it and then never delivers it.
        return Err(Error::invalid(format!("message {} has an empty body; SNS requires at least 1 byte", m.id)));
    }
    let meta = Meta {
        id: m.id.to_string(),
        ts: micros(m.publish_time),
        key: if ordered { m.ordering_key.as_deref().map(str::to_string) } else { None },
        trace: m.trace.clone(),
        ..Default::default()
    };
    let attr = |v: String| MessageAttributeValue::builder().data_type("String").string_value(v).build();
    let mut b = PublishBatchRequestEntry::builder().id(i.to_string()).message(body);
    b = b.message_attributes(META_ATTRIBUTE, attr(meta.encode()).map_err(|e| Error::invalid(e.to_string()))?);
    for (k, v) in &m.attributes {
        b = b.message_attributes(k, attr(v.clone()).map_err(|e| Error::invalid(e.to_string()))?);
    }
    if fifo {
        let group = m.ordering_key.as_deref().filter(|_| ordered).map_or_else(|| m.id.to_string(), str::to_string);
        b = b.message_group_id(group).message_deduplication_id(m.id.to_string());
    }
    b.build().map_err(|e| Error::invalid(format!("aws: bad PublishBatch entry: {e}")))
}

/// Sends `batch` through `call` (one `PublishBatch`) and reports each entry that did not succeed.
async fn publish_with<F, Fut>(
    arn: &str,
    fifo: bool,
    ordered: bool,
    batch: &[OutgoingMessage],
    call: F,
) -> Result<PublishReport>
where
    F: FnOnce(Vec<PublishBatchRequestEntry>) -> Fut,
    Fut: std::future::Future<Output = Result<PublishBatchOutput>>,
{
    let mut report = PublishReport::accepted();
    let mut entries = Vec::with_capacity(batch.len());
    for (i, m) in batch.iter().enumerate() {
        match to_entry(i, m, fifo, ordered) {
            Ok(e) => entries.push(e),
            Err(e) => report.refuse(i, e),
        }
    }
    if entries.is_empty() {
        return Ok(report);
    }
    let sent: Vec<usize> = entries.iter().filter_map(|e| e.id().parse().ok()).collect();
    let out = call(entries).await?;
    let mut answered = vec![false; batch.len()];
    for ok in out.successful() {
        if let Some(i) = ok.id().and_then(|id| id.parse::<usize>().ok()).filter(|i| *i < batch.len()) {
            answered[i] = true;
        }
    }
    for f in out.failed() {
        let Some(i) = f.id().parse::<usize>().ok().filter(|i| *i < batch.len()) else { continue };
        answered[i] = true;
        report.refuse(i, entry("PublishBatch", arn, f.code(), f.message(), f.sender_fault()));
    }
    for i in sent.into_iter().filter(|i| !answered[*i]) {
        report.refuse(i, Error::backend(format!("aws: PublishBatch on {arn} returned no result for an entry"), true));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sns::types::{BatchResultErrorEntry, PublishBatchResultEntry};

    fn message(n: u8) -> OutgoingMessage {
        OutgoingMessage::new(
            tidings_core::MessageId::from(format!("m{n}")),
            bytes::Bytes::from(format!("{{\"n\":{n}}}")),
            Default::default(),
            None,
            std::time::SystemTime::now(),
        )
    }

    fn output(ok: &[&str], failed: &[(&str, &str, bool)]) -> PublishBatchOutput {
        let mut b = PublishBatchOutput::builder();
        for id in ok {
            b = b.successful(PublishBatchResultEntry::builder().id(*id).message_id("x").build());
        }
        for (id, code, sender) in failed {
            b = b.failed(BatchResultErrorEntry::builder().id(*id).code(*code).sender_fault(*sender).build().unwrap());
        }
        b.build()
    }

    async fn run(out: PublishBatchOutput) -> Vec<(usize, Error)> {
        let batch: Vec<_> = (0..3).map(message).collect();
        let report = publish_with("arn:test", false, false, &batch, |entries| {
            assert_eq!(entries.len(), 3, "one call carries the whole batch");
            async move { Ok(out) }
        })
        .await
        .unwrap();
        report.into_failures()
    }

    #[tokio::test]
    async fn each_failed_entry_is_reported_with_its_retryable_flag() {
        let failed = run(output(&["0"], &[("1", "InternalError", false), ("2", "InvalidParameter", true)])).await;
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0].0, 1);
        assert!(failed[0].1.is_retryable(), "a service fault may succeed later");
        assert_eq!(failed[1].0, 2);
        assert!(!failed[1].1.is_retryable() && failed[1].1.to_string().contains("InvalidParameter"));
    }

    #[tokio::test]
    async fn an_entry_without_a_result_is_reported_retryable() {
        let failed = run(output(&["0", "2"], &[])).await;
        assert_eq!(failed.len(), 1);
        assert!(failed[0].0 == 1 && failed[0].1.is_retryable());
    }

    #[tokio::test]
    async fn an_entry_that_cannot_be_built_is_refused_without_a_call_for_it() {
        let mut batch: Vec<_> = (0..2).map(message).collect();
        batch[0] = OutgoingMessage::new(
            batch[0].id.clone(),
            bytes::Bytes::new(),
            Default::default(),
            None,
            batch[0].publish_time,
        );
        let report = publish_with("arn:test", false, false, &batch, |entries| {
            assert_eq!(entries.len(), 1);
            async move { Ok(output(&["1"], &[])) }
        })
        .await
        .unwrap();
        let failed = report.into_failures();
        assert_eq!(failed.len(), 1);
        assert!(failed[0].0 == 0 && failed[0].1.to_string().contains("empty body"));
    }
}
