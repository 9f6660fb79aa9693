//! Running one handler: decode, the delivery's span, panic isolation, and lease extension while it runs. How a call
//! ended is a [`Done`]; a failure keeps its class ([`Failure`]) from where it happened to where it is settled.

use std::any::type_name;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use tracing::Span;

use super::{Attempt, Ctx};
use crate::backend::{AckId, ReceivedMessage};
use crate::message::{Message, Metadata};
use crate::metrics::DeadReason;

/// A consumer span of the subscription `$ctx` (`process <subscription>`) with these fields besides the common ones.
macro_rules! process_span {
    ($ctx:expr, $($fields:tt)*) => {{
        let spec = &$ctx.runner.spec;
        tracing::info_span!(
            target: "tidings",
            "process",
            otel.name = %$ctx.span_name,
            otel.kind = "consumer",
            messaging.system = %$ctx.system,
            messaging.destination.name = %spec.topic.name,
            messaging.destination.subscription.name = %spec.name,
            messaging.consumer.group.name = %spec.name,
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            $($fields)*
            error.type = tracing::field::Empty,
        )
    }};
}

impl<T> Ctx<T> {
    /// The consumer span of one delivery attempt, connected to the context the message carried.
    pub(super) fn process_span(&self, msg: &ReceivedMessage) -> Span {
        let span =
            process_span!(self, messaging.message.id = %msg.id, tidings.delivery.attempt = i64::from(msg.attempt),);
        crate::trace::connect(msg.trace.as_ref(), &span);
        span
    }

    /// The consumer span of one batch handler call, current while the handler runs; each message's own `process`
    /// span (its attempt, connected to the context it carried) is a child of it.
    pub(super) fn batch_span(&self, n: usize) -> Span {
        process_span!(self, messaging.batch.message_count = n as i64,)
    }
}

/// How a handler call ended.
pub(super) enum Done {
    Ok,
    Failed(Failure),
}

/// Why a delivery failed, classified where it failed. Its text ([`fmt::Display`]) is the dead-letter reason stored
/// on the wire.
#[derive(Clone)]
pub(super) enum Failure {
    /// The handler returned an error: retried until the retry policy is exhausted.
    Handler(String),
    /// The handler panicked (with this message): retried like an error.
    Panic(String),
    /// The handler returned an unrecoverable error: to the DLQ at once.
    Unrecoverable(String),
    /// The payload could not be decoded (this is the reason): to the DLQ at once.
    Poison(String),
}

impl Failure {
    /// The class, for the metrics and the span's `error.type`.
    pub(super) fn class(&self) -> DeadReason {
        match self {
            Self::Handler(_) => DeadReason::HandlerError,
            Self::Panic(_) => DeadReason::Panic,
            Self::Unrecoverable(_) => DeadReason::Unrecoverable,
            Self::Poison(_) => DeadReason::Poison,
        }
    }

    /// Whether retrying cannot help: the delivery goes to the DLQ at once.
    pub(super) fn is_final(&self) -> bool {
        matches!(self, Self::Unrecoverable(_) | Self::Poison(_))
    }
}

/// Start of the failure text of a handler that panicked.
const PANIC_PREFIX: &str = "handler panicked: ";

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handler(e) | Self::Poison(e) => f.write_str(e),
            Self::Panic(p) => write!(f, "{PANIC_PREFIX}{p}"),
            Self::Unrecoverable(e) => write!(f, "unrecoverable: {e}"),
        }
    }
}

pub(super) type Running = futures_util::future::CatchUnwind<AssertUnwindSafe<InSpan<crate::handler::HandlerFuture>>>;

/// A handler's future, polled inside its delivery's (or batch's) span when that span is enabled. A plain wrapper:
/// tracing's `Instrumented` (which also enters the span to drop the future) slowed deliveries whose handler panicked.
pub(super) struct InSpan<F> {
    pub(super) span: Span,
    pub(super) fut: F,
}

impl<F: Future + Unpin> Future for InSpan<F> {
    type Output = F::Output;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.span.is_disabled() {
            return std::pin::Pin::new(&mut this.fut).poll(cx);
        }
        let _entered = this.span.enter();
        std::pin::Pin::new(&mut this.fut).poll(cx)
    }
}

/// The first part of a delivery, without waiting: decode, call the handler, poll it once.
pub(super) enum Begin {
    Done(Done),
    Running(Running),
}

pub(super) fn done(r: std::thread::Result<crate::handler::HandlerResult>) -> Done {
    match r {
        Ok(Ok(())) => Done::Ok,
        Ok(Err(e)) if e.is_unrecoverable() => Done::Failed(Failure::Unrecoverable(e.to_string())),
        Ok(Err(e)) => Done::Failed(Failure::Handler(e.to_string())),
        Err(panic) => Done::Failed(Failure::Panic(panic_message(&panic))),
    }
}

pub(super) async fn begin<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    msg: &ReceivedMessage,
) -> (Begin, Attempt) {
    let span = ctx.process_span(msg);
    let started = ctx.runner.metrics.handler_started(msg.publish_time);
    let message = match decode(ctx, msg, &span) {
        Ok(m) => m,
        Err(poison) => return (Begin::Done(Done::Failed(poison)), Attempt { span, started }),
    };
    let handler = ctx.handler.one();
    let called = span.in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(message))));
    let mut fut = match called {
        Ok(fut) => AssertUnwindSafe(InSpan { span: span.clone(), fut }).catch_unwind(),
        Err(panic) => return (Begin::Done(done(Err(panic))), Attempt { span, started }),
    };
    // Most handlers finish on their first poll: then nothing more is allocated or scheduled for them.
    let begun = match std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx))).await {
        Poll::Ready(r) => Begin::Done(done(r)),
        Poll::Pending => Begin::Running(fut),
    };
    (begun, Attempt { span, started })
}

/// The message a handler gets, or the poison failure (recorded on the delivery's span) when its payload cannot be
/// decoded as `T`.
pub(super) fn decode<T: DeserializeOwned>(
    ctx: &Ctx<T>,
    msg: &ReceivedMessage,
    span: &Span,
) -> Result<Message<T>, Failure> {
    let payload = match serde_json::from_slice::<T>(&msg.payload) {
        Ok(p) => p,
        Err(e) => {
            span.record("error.type", "poison");
            let reason = format!("poison message: payload cannot be decoded as {}: {e}", type_name::<T>());
            return Err(Failure::Poison(reason));
        }
    };
    let meta = Metadata {
        id: msg.id.clone(),
        publish_time: msg.publish_time,
        attempt: msg.attempt,
        attributes: msg.attributes.clone(),
        ordering_key: msg.ordering_key.as_deref().map(str::to_string),
    };
    Ok(Message::with_shutdown(payload, meta, ctx.runner.shutdown_signal.clone()))
}

/// Runs `fut` while extending the leases of these deliveries (one, or a batch's) every third of the ack deadline,
/// counted from `leased_at` (when the earliest lease began): a lease whose first third passed before the handler started is extended at once, so a delivery
/// that waited for its turn on a busy machine does not expire under a running handler.
pub(super) async fn with_lease<T, F: Future>(
    ctx: &Ctx<T>,
    ack_ids: &[AckId],
    span: &Span,
    leased_at: tokio::time::Instant,
    fut: F,
) -> F::Output {
    let deadline = ctx.runner.spec.config.ack_deadline;
    let period = (deadline / 3).max(Duration::from_millis(1));
    let mut next = leased_at + period;
    let mut fut = std::pin::pin!(fut);
    loop {
        // Biased: the work is polled before the lease timer (handlers that finish on their first poll never get here:
        // `begin` polls them once inline).
        tokio::select! {
            biased;
            out = &mut fut => return out,
            _ = tokio::time::sleep_until(next) => {
                tracing::debug!(target: "tidings", parent: span, subscription = %ctx.runner.key.1,
                    tidings.settle = "extend_lease", by = ?deadline, "extending the lease");
                // The work runs on while the lease is extended (the extension retried as settle calls are).
                tokio::select! {
                    biased;
                    out = &mut fut => return out,
                    r = ctx.runner.extend(ack_ids.to_vec(), deadline) => if let Err(e) = r {
                        tracing::warn!(subscription = %ctx.runner.key.1, error = %e, "lease extension failed");
                    }
                }
                next = tokio::time::Instant::now() + period;
            }
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::HandlerError;

    fn failure(r: std::thread::Result<crate::handler::HandlerResult>) -> Failure {
        match done(r) {
            Done::Failed(f) => f,
            Done::Ok => panic!("expected a failure"),
        }
    }

    /// The reasons stored with dead letters keep their text (the golden fixtures hold it); the class travels with the
    /// failure, so a handler error worded like a panic stays a handler error.
    #[test]
    fn failures_keep_their_class_and_their_stored_text() {
        let f = failure(Ok(Err(HandlerError::unrecoverable("card declined"))));
        assert_eq!(
            (f.class(), f.is_final(), f.to_string()),
            (DeadReason::Unrecoverable, true, "unrecoverable: card declined".into())
        );
        let f = failure(Err(Box::new("boom")));
        assert_eq!(
            (f.class(), f.is_final(), f.to_string()),
            (DeadReason::Panic, false, "handler panicked: boom".into())
        );
        let f = failure(Err(Box::new(String::from("boom 2"))));
        assert_eq!(f.to_string(), "handler panicked: boom 2");
        let f = failure(Err(Box::new(7_u8)));
        assert_eq!(f.to_string(), "handler panicked: non-string panic payload");
        let f = failure(Ok(Err(HandlerError::retry("handler panicked: not really"))));
        assert_eq!(
            (f.class(), f.is_final(), f.to_string()),
            (DeadReason::HandlerError, false, "handler panicked: not really".into())
        );
        let f = Failure::Poison("poison message: payload cannot be decoded as u8: x".into());
        assert_eq!((f.class(), f.is_final()), (DeadReason::Poison, true));
        assert_eq!(f.to_string(), "poison message: payload cannot be decoded as u8: x");
    }
}
