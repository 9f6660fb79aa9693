//! The publisher's unit tests.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;

use super::{encode, Publisher};
use crate::backend::{Capabilities, OutgoingMessage, PublishReport, TopicDriver};
use crate::TopicConfig;
use crate::{Error, Result};

/// Refuses every immediate publish, retryably or not; the async path accepts.
#[derive(Debug)]
struct RefusesAtOnce {
    retryable: bool,
    async_calls: AtomicU32,
}

#[async_trait::async_trait]
impl TopicDriver for RefusesAtOnce {
    async fn publish(&self, _batch: &[OutgoingMessage]) -> Result<PublishReport> {
        self.async_calls.fetch_add(1, SeqCst);
        Ok(PublishReport::default())
    }
    fn publish_now(&self, _batch: &mut [OutgoingMessage]) -> Option<Result<()>> {
        Some(Err(Error::backend("refused (injected)", self.retryable)))
    }
}

pub(super) fn message(n: u32) -> OutgoingMessage {
    OutgoingMessage::new(
        crate::MessageId::from(format!("m{n}")),
        bytes::Bytes::from(format!("{{\"n\":{n}}}")),
        Default::default(),
        None,
        std::time::SystemTime::now(),
    )
}

#[tokio::test]
async fn an_immediate_publish_that_fails_retryably_goes_the_async_way_and_a_final_failure_does_not() {
    let caps = Capabilities::default();
    let retryable = Arc::new(RefusesAtOnce { retryable: true, async_calls: AtomicU32::new(0) });
    let p = Publisher::new("test", "t", TopicConfig::at_least_once(), retryable.clone(), &caps);
    p.publish_many(&mut [message(1)]).await.unwrap();
    assert_eq!(retryable.async_calls.load(SeqCst), 1);
    let fatal = Arc::new(RefusesAtOnce { retryable: false, async_calls: AtomicU32::new(0) });
    let p = Publisher::new("test", "t", TopicConfig::at_least_once(), fatal.clone(), &caps);
    let e = p.publish_one(message(1)).await.unwrap_err();
    assert!(e.to_string().contains("refused (injected)"), "{e}");
    assert_eq!(fatal.async_calls.load(SeqCst), 0);
}

#[test]
fn encoded_payloads_never_alias_across_chunks_and_sizes() {
    // Sizes around the chunk and own-allocation limits, in an order that crosses chunk ends many times.
    let sizes: Vec<usize> = (0..2_000).map(|i| (i * 7919) % 3_000).collect();
    let texts: Vec<String> = sizes.iter().enumerate().map(|(i, n)| format!("{i}:{}", "x".repeat(*n))).collect();
    let payloads: Vec<_> = texts.iter().map(|t| encode(t).unwrap()).collect();
    for (t, p) in texts.iter().zip(&payloads) {
        assert_eq!(serde_json::from_slice::<String>(p).unwrap(), *t);
        assert_eq!(p.len(), t.len() + 2, "exactly the encoding, no spare bytes");
    }
}

#[test]
fn small_payloads_share_a_chunk_and_large_ones_do_not() {
    let (a, b) = (encode(&"first").unwrap(), encode(&"second").unwrap());
    assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr(), "consecutive small payloads are adjacent");
    let large = encode(&"y".repeat(5_000)).unwrap();
    let c = encode(&"third").unwrap();
    assert_eq!(b.as_ptr().wrapping_add(b.len()), c.as_ptr(), "a large payload does not take chunk space");
    let range = large.as_ptr() as usize..large.as_ptr() as usize + large.len();
    assert!(!range.contains(&(c.as_ptr() as usize)));
}

#[test]
fn a_serializer_that_panics_leaves_no_partial_payload_behind() {
    struct Panics;
    impl serde::Serialize for Panics {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("half", "written")?;
            panic!("serializer bug");
        }
    }
    assert!(std::panic::catch_unwind(|| encode(&Panics)).is_err());
    assert_eq!(&encode(&"next").unwrap()[..], b"\"next\"");
}

#[test]
fn an_encoding_error_leaves_no_partial_payload_behind() {
    use std::collections::HashMap;
    // JSON object keys must be strings: serde_json refuses a map keyed by a tuple after writing "{".
    let bad: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    assert!(encode(&bad).is_err());
    assert_eq!(&encode(&7).unwrap()[..], b"7");
}

type Script = Box<dyn Fn(usize, &[OutgoingMessage]) -> Result<PublishReport> + Send + Sync>;

/// Answers each call by `script(call number, batch)`, after `delay`; records the ids of each call and the most
/// calls in flight at once.
struct Scripted {
    script: Script,
    delay: std::time::Duration,
    calls: std::sync::Mutex<Vec<Vec<String>>>,
    in_flight: AtomicU32,
    most_in_flight: AtomicU32,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripted")
    }
}

impl Scripted {
    fn new(
        delay_ms: u64,
        script: impl Fn(usize, &[OutgoingMessage]) -> Result<PublishReport> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Scripted {
            script: Box::new(script),
            delay: std::time::Duration::from_millis(delay_ms),
            calls: Default::default(),
            in_flight: AtomicU32::new(0),
            most_in_flight: AtomicU32::new(0),
        })
    }
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl TopicDriver for Scripted {
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(batch.iter().map(|m| m.id.to_string()).collect());
            calls.len()
        };
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most_in_flight.fetch_max(now, SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, SeqCst);
        (self.script)(n, batch)
    }
}

fn refuse(pairs: &[(usize, bool)]) -> PublishReport {
    let mut r = PublishReport::accepted();
    for &(i, retryable) in pairs {
        r.refuse(i, Error::backend(format!("entry {i} refused (injected)"), retryable));
    }
    r
}

#[tokio::test(start_paused = true)]
async fn exactly_the_refused_messages_are_retried_and_a_final_refusal_is_not() {
    let d = Scripted::new(0, |n, _| Ok(if n == 1 { refuse(&[(1, true), (2, false)]) } else { refuse(&[]) }));
    let mut batch: Vec<_> = (0..3).map(message).collect();
    let results = super::send(d.as_ref(), "t", &mut batch).await;
    assert_eq!(d.calls(), vec![vec!["m0", "m1", "m2"], vec!["m1"]], "only the retryable refusal is sent again");
    assert!(results[0].is_ok() && results[1].is_ok());
    assert!(!results[2].as_ref().unwrap_err().is_retryable());
}

#[tokio::test(start_paused = true)]
async fn each_message_has_one_budget_of_attempts() {
    // Message 1 is always refused; message 0 of the first call fails the whole call once.
    let d = Scripted::new(0, |n, batch| {
        if n == 1 {
            return Err(Error::backend("call failed (injected)", true));
        }
        Ok(refuse(&batch.iter().position(|m| m.id.as_str() == "m1").map(|i| vec![(i, true)]).unwrap_or_default()))
    });
    let mut batch: Vec<_> = (0..2).map(message).collect();
    let results = super::send(d.as_ref(), "t", &mut batch).await;
    assert_eq!(d.calls().len(), super::PUBLISH_ATTEMPTS as usize);
    assert!(results[0].is_ok(), "retried after the failed call");
    let e = results[1].as_ref().unwrap_err();
    assert!(e.is_retryable() && e.to_string().contains("entry"), "gave up after its attempts: {e}");
}

/// Publishes `n` messages from `n` tasks at once; each must succeed.
async fn publish_concurrently(p: Publisher, n: u32) {
    let p = Arc::new(p);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn({
                let p = p.clone();
                async move { p.publish_one(message(i)).await }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_publishes_share_calls_over_the_linger() {
    let d = Scripted::new(1, |_, _| Ok(PublishReport::accepted()));
    let caps = Capabilities {
        publish_linger: std::time::Duration::from_millis(5),
        max_publish_batch: 10,
        publish_in_flight: 4,
        ..Default::default()
    };
    publish_concurrently(Publisher::new("test", "t", TopicConfig::at_least_once(), d.clone(), &caps), 25).await;
    let sizes: Vec<usize> = d.calls().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![10, 10, 5], "coalesced into full calls of the backend's batch size");
}

#[tokio::test(start_paused = true)]
async fn an_ordered_topic_has_one_call_in_flight_and_others_several() {
    for (config, expected) in [(TopicConfig::at_least_once().ordered(), 1), (TopicConfig::at_least_once(), 4)] {
        let d = Scripted::new(20, |_, _| Ok(PublishReport::accepted()));
        let caps = Capabilities {
            publish_linger: std::time::Duration::from_millis(1),
            max_publish_batch: 1,
            publish_in_flight: 4,
            ..Default::default()
        };
        publish_concurrently(Publisher::new("test", "t", config, d.clone(), &caps), 12).await;
        assert_eq!(d.most_in_flight.load(SeqCst), expected, "{config:?}");
    }
}

#[test]
fn a_call_takes_what_fits_its_bytes_and_at_least_one_message() {
    let d = Scripted::new(0, |_, _| Ok(PublishReport::accepted()));
    let metrics = crate::metrics::PublishMetrics::new("test", "t");
    let parts =
        super::Parts { name: "t".into(), metrics, driver: d, max_batch: 10, max_bytes: 30, atomic: false, overhead: 4 };
    let batch: Vec<_> = (0..5).map(message).collect(); // 7 bytes each + 4 overhead
    assert_eq!(parts.chunk_len(&batch), 2);
    let big = vec![OutgoingMessage::new(
        crate::MessageId::from("b"),
        bytes::Bytes::from(vec![b'x'; 100]),
        Default::default(),
        None,
        std::time::SystemTime::now(),
    )];
    assert_eq!(parts.chunk_len(&big), 1, "a single message always fits");
}

#[tokio::test(start_paused = true)]
async fn a_batch_goes_whole_to_a_backend_that_takes_any_batch_atomically_and_in_chunks_otherwise() {
    for atomic in [true, false] {
        let d = Scripted::new(0, |_, _| Ok(PublishReport::accepted()));
        let caps = Capabilities {
            max_publish_batch: 500,
            max_publish_bytes: 1_000,
            atomic_publish: atomic,
            ..Default::default()
        };
        let p = Publisher::new("test", "t", TopicConfig::at_least_once(), d.clone(), &caps);
        let mut batch: Vec<_> = (0..1_500).map(message).collect();
        p.publish_many(&mut batch).await.unwrap();
        let sizes: Vec<usize> = d.calls().iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 1_500);
        if atomic {
            assert_eq!(sizes, [1_500], "one call, past both the message and the byte limit");
        } else {
            assert!(sizes.len() > 3 && sizes.iter().all(|&n| n <= 500), "calls within the limits: {sizes:?}");
        }
    }
}
