//! One pull request on a durable consumer: `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`, answered to the
//! subscription's own inbox, read until the batch is full or the server ends the request (404 no messages, 408
//! expired, 409 limits). One inbox serves every pull of a driver, one pull at a time: no subscribe and unsubscribe per
//! pull, and deliveries of a pull that was given up on (a receive cancelled at shutdown) go to the next one.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tidings_core::{Error, ErrorKind, Result};

use crate::names::SubNames;
use crate::Shared;

/// How a pull ends: messages, and whether the server hit a limit (`MaxAckPending`) rather than running dry.
pub struct Pulled {
    pub messages: Vec<async_nats::Message>,
}

/// A driver's reply subject and its subscription.
#[derive(Debug)]
pub struct Inbox {
    subject: String,
    sub: async_nats::Subscriber,
}

impl Inbox {
    pub async fn new(s: &Shared, names: &SubNames) -> Result<Self> {
        let subject = s.client.new_inbox();
        let sub =
            s.client.subscribe(subject.clone()).await.map_err(|e| {
                Error::backend(format!("nats: inbox for consumer {} failed: {e}", names.consumer), true)
            })?;
        Ok(Self { subject, sub })
    }

    /// The next message or status on the inbox.
    pub async fn next(&mut self) -> Option<async_nats::Message> {
        self.sub.next().await
    }

    /// Unsubscribes.
    pub async fn close(mut self) {
        let _ = self.sub.unsubscribe().await;
    }
}

/// Pulls up to `batch` messages. `expires: None` takes only what is there now (`no_wait`); `Some(d)` waits up to `d`
/// for the batch to fill.
pub async fn pull(
    s: &Shared,
    names: &SubNames,
    inbox: &mut Inbox,
    batch: usize,
    expires: Option<Duration>,
) -> Result<Pulled> {
    let op = |e: &dyn std::fmt::Display| {
        Error::backend(format!("nats: pull from consumer {} failed: {e}", names.consumer), true)
    };
    let sub = &mut inbox.sub;
    let body = match expires {
        None => json!({ "batch": batch, "no_wait": true }),
        Some(d) => json!({ "batch": batch, "expires": d.as_nanos() as u64 }),
    };
    s.calls.count("PULL");
    s.client
        .publish_with_reply(names.next_subject(), inbox.subject.clone(), body.to_string().into())
        .await
        .map_err(|e| op(&e))?;
    // The server answers a no_wait pull at once and ends a waiting one at `expires`; past this, the connection was
    // lost (the client reconnects, but the request died with the old connection).
    let limit = expires.unwrap_or_default() + s.config.request_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let mut messages = Vec::new();
    while messages.len() < batch {
        let m = match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(op(&"the inbox subscription closed")),
            Err(_) if messages.is_empty() && expires.is_none() => {
                return Err(Error::backend(
                    format!("nats: pull from consumer {}: no answer within {limit:?}", names.consumer),
                    true,
                ))
            }
            Err(_) => break,
        };
        let Some(status) = m.status else {
            messages.push(m);
            continue;
        };
        match status.as_u16() {
            200 => messages.push(m),
            100 => continue,
            404 | 408 => break,
            // 409: MaxAckPending or MaxWaiting reached, or the consumer was deleted.
            409 => {
                let d = m.description.unwrap_or_default();
                if d.to_ascii_lowercase().contains("deleted") {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("nats: consumer {} was deleted: {d}", names.consumer),
                    ));
                }
                tracing::debug!(consumer = %names.consumer, status = %d, "pull ended by the server");
                break;
            }
            503 => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "nats: no JetStream consumer {} on stream {} answered the pull (it does not exist, or \
                         JetStream is not enabled)",
                        names.consumer, names.topic.stream
                    ),
                ))
            }
            other => {
                return Err(op(&format!("status {other} {}", m.description.unwrap_or_default())));
            }
        }
    }
    Ok(Pulled { messages })
}
