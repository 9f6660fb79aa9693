//! Settling deliveries by their reply subjects: `+ACK`, `-NAK {"delay": ns}`, `+WPI` (progress: the ack wait starts
//! again) and `+TERM`. Plain settles are written without waiting and then confirmed together by one flush (the server
//! handles a connection's messages in order, so its PONG comes after it read them all); exactly-once acks are
//! double-acked: each waits for the server's confirmation (`AckSync`).

use std::time::Duration;

use bytes::Bytes;
use tidings_core::backend::AckId;
use tidings_core::{Error, Result};

use crate::Shared;

/// The reply subject an ack id stands for.
pub fn reply(id: &AckId) -> &str {
    match id {
        AckId::Text(r) => r,
        AckId::Num(_) => "",
    }
}

/// The body of a nack with this delay.
pub fn nak(delay: Duration) -> Bytes {
    if delay.is_zero() {
        Bytes::from_static(b"-NAK")
    } else {
        Bytes::from(format!("-NAK {{\"delay\": {}}}", delay.as_nanos()))
    }
}

/// Writes each `(reply subject, body)` and confirms them with one flush.
pub async fn send(s: &Shared, what: &str, items: Vec<(String, Bytes)>) -> Result<()> {
    let mut any = false;
    for (subject, body) in items {
        if subject.is_empty() {
            continue;
        }
        s.client.publish(subject, body).await.map_err(|e| Error::backend(format!("nats: {what} failed: {e}"), true))?;
        any = true;
    }
    if any {
        s.calls.count("FLUSH");
        s.client.flush().await.map_err(|e| Error::backend(format!("nats: {what} failed: {e}"), true))?;
    }
    Ok(())
}

/// Acks each delivery and waits for the server to confirm every one (all in flight at once).
pub async fn ack_sync(s: &Shared, ids: &[AckId]) -> Result<()> {
    let calls = ids.iter().map(reply).filter(|r| !r.is_empty()).map(|r| {
        s.calls.count("ACK.SYNC");
        s.client.request(r.to_string(), Bytes::from_static(b"+ACK"))
    });
    for r in futures_util::future::join_all(calls).await {
        r.map_err(|e| Error::backend(format!("nats: confirmed ack failed: {e}"), true))?;
    }
    Ok(())
}
