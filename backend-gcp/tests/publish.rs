//! Publish calls against the Pub/Sub emulator: core coalesces concurrent publishes and splits batches, the driver makes
//! one `Publish` call per batch it is given (one per ordering key on ordered topics) and never retries. Calls are
//! counted by the backend's `pubsub:Publish` counter and, for failures, by a stand-in server that fails every call.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::backend::{OutgoingMessage, TopicSpec};
use tidings_core::{Backend, Bus, ErrorKind, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};
use tidings_gcp::Provisioning;
use tidings_testkit::conformance::foreign::{OrderedProbe, Step};
use tidings_testkit::conformance::proxy::FaultProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u32,
}

fn unique(base: &str) -> &'static str {
    let id = uuid::Uuid::now_v7().simple().to_string();
    Box::leak(format!("{base}-{}", &id[id.len() - 10..]).into_boxed_str())
}

fn publish_calls(bus: &Bus) -> u64 {
    bus.api_calls().expect("the gcp backend counts its calls").snapshot().get("pubsub:Publish").copied().unwrap_or(0)
}

/// Subscribes `sub` to `t` and returns the numbers its handler has seen.
async fn seen(bus: &Bus, t: &Topic<Job>) -> Arc<Mutex<BTreeSet<u32>>> {
    let seen: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let s = seen.clone();
    let cfg = SubscriptionConfig::DEFAULT.with_max_concurrency(64);
    bus.subscribe(t, "sub", cfg, move |m: Message<Job>| {
        s.lock().unwrap().insert(m.n);
        async { Ok(()) }
    })
    .await
    .expect("subscribe");
    seen
}

async fn wait_for(seen: &Mutex<BTreeSet<u32>>, count: usize) {
    for _ in 0..600 {
        if seen.lock().unwrap().len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("only {} of {count} messages arrived in 60 s", seen.lock().unwrap().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_publish_calls() {
    let bus = Bus::new(Arc::new(support::backend(support::config()).await));
    let t = Topic::<Job>::new(unique("coalesced"), TopicConfig::at_least_once());
    let seen = seen(&bus, &t).await;
    let before = publish_calls(&bus);
    let n = 300u32;
    let publishes: Vec<_> = (0..n)
        .map(|i| {
            let (bus, t) = (bus.clone(), Topic::<Job>::new(t.name(), t.config()));
            tokio::spawn(async move { t.publish(&bus, &Job { n: i }).await })
        })
        .collect();
    for p in publishes {
        p.await.unwrap().expect("publish");
    }
    let calls = publish_calls(&bus) - before;
    eprintln!("gcp: {n} concurrent publishes made {calls} Publish calls");
    assert!(calls < u64::from(n), "core coalesced them: {calls} calls for {n} publishes");
    assert!(calls >= u64::from(n.div_ceil(100)), "at most gcp.publish_batch_messages (100) a call: {calls} calls");
    wait_for(&seen, n as usize).await;
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_2500_goes_in_three_calls_of_at_most_1000() {
    let mut config = support::config();
    config.publish_batch_messages = 1000;
    config.publish_batch_bytes = 10_000_000;
    let bus = Bus::new(Arc::new(support::backend(config).await));
    assert_eq!(bus.capabilities().max_publish_batch, 1000);
    let t = Topic::<Job>::new(unique("batch2500"), TopicConfig::at_least_once());
    let seen = seen(&bus, &t).await;
    let before = publish_calls(&bus);
    let jobs: Vec<Job> = (0..2500).map(|n| Job { n }).collect();
    let ids = t.publish_batch(&bus, jobs.iter().map(|j| (j, PublishOptions::new()))).await.expect("publish_batch");
    assert_eq!(ids.len(), 2500);
    let calls = publish_calls(&bus) - before;
    eprintln!("gcp: a publish_batch of 2500 messages made {calls} Publish calls");
    assert_eq!(calls, 3, "1000 + 1000 + 500");
    wait_for(&seen, 2500).await;
    bus.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_batch_goes_in_one_call_per_ordering_key() {
    // Pub/Sub takes one ordering key per Publish request: 3 keys interleaved in one batch make 3 calls, each key's
    // messages in order.
    let bus = Bus::new(Arc::new(support::backend(support::config()).await));
    let topic = unique("ordered-keys");
    let probe = OrderedProbe::subscribe(&bus, topic, "sub").await;
    let t = Topic::<Step>::new(topic, TopicConfig::at_least_once().ordered());
    let steps: Vec<Step> = OrderedProbe::messages().map(|(key, n, _)| Step { key: key.into(), n }).collect();
    let before = publish_calls(&bus);
    t.publish_batch(&bus, steps.iter().map(|s| (s, PublishOptions::new().ordering_key(s.key.clone()))))
        .await
        .expect("publish_batch");
    let calls = publish_calls(&bus) - before;
    eprintln!("gcp: an ordered batch of {} messages on 3 keys made {calls} Publish calls", steps.len());
    assert_eq!(calls, 3, "one call per ordering key");
    probe.verify("tidings' ordering key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ordered_publish_leaves_its_key_usable() {
    // The subscriber talks to the emulator directly; the publisher goes through a proxy that is cut for a while.
    let sub_bus = Bus::new(Arc::new(support::backend(support::config()).await));
    let topic = unique("ordered-cut");
    let cfg = TopicConfig::at_least_once().ordered();
    let t = Topic::<Job>::new(topic, cfg);
    let order: Arc<Mutex<Vec<u32>>> = Arc::default();
    let o = order.clone();
    sub_bus
        .subscribe(&t, "sub", SubscriptionConfig::DEFAULT, move |m: Message<Job>| {
            o.lock().unwrap().push(m.n);
            async { Ok(()) }
        })
        .await
        .unwrap();
    let proxy = FaultProxy::start(support::host()).await;
    let mut config = support::config();
    config.endpoint = Some(format!("http://{}", proxy.addr));
    let bus = Bus::new(Arc::new(support::backend(config).await));
    let key = || PublishOptions::new().ordering_key("k");
    t.publish_with(&bus, &Job { n: 1 }, key()).await.expect("first publish");
    proxy.cut();
    let e = t.publish_with(&bus, &Job { n: 2 }, key()).await.expect_err("the network is cut");
    assert!(e.is_retryable(), "a cut network is transient: {e}");
    proxy.restore();
    t.publish_with(&bus, &Job { n: 3 }, key()).await.expect("the key publishes again after the failure");
    for _ in 0..300 {
        if order.lock().unwrap().contains(&3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(*order.lock().unwrap(), vec![1, 3], "the failed message is not delivered, the others in order");
    bus.shutdown(Duration::from_secs(5)).await;
    sub_bus.shutdown(Duration::from_secs(5)).await;
}

/// A stand-in for Pub/Sub's REST endpoint that answers every request with `status` and Google's error body naming
/// `code`, counting the requests.
async fn failing_endpoint(status: u16, code: &'static str) -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the head, then the body its content-length announces.
                let (head_end, length) = loop {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                            .unwrap_or(0usize);
                        break (end + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                counted.fetch_add(1, SeqCst);
                let body = format!(r#"{{"error":{{"code":{status},"message":"injected","status":"{code}"}}}}"#);
                let answer = format!(
                    "HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (addr, requests)
}

fn job(n: u32) -> OutgoingMessage {
    let payload = bytes::Bytes::from(serde_json::to_vec(&Job { n }).unwrap());
    OutgoingMessage::new(format!("m{n}").into(), payload, Default::default(), None, std::time::SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_call_is_not_retried_by_the_driver() {
    for (status, code, retryable) in [(503, "UNAVAILABLE", true), (400, "FAILED_PRECONDITION", false)] {
        let (addr, requests) = failing_endpoint(status, code).await;
        let mut config = support::provisioned(Provisioning::Off);
        config.endpoint = Some(format!("http://{addr}"));
        let backend = support::backend(config).await;
        let name = unique("refused");
        let driver = backend.topic(&TopicSpec::new(name, name, TopicConfig::at_least_once())).await.unwrap();
        let e = driver.publish(&[job(1), job(2)]).await.expect_err("the endpoint fails every call");
        assert_eq!(e.is_retryable(), retryable, "{code}: {e}");
        assert!(e.to_string().contains(code), "the error names the status: {e}");
        assert_eq!(requests.load(SeqCst), 1, "{code}: one request for one driver call");
        let calls = backend.api_calls().unwrap().snapshot().get("pubsub:Publish").copied();
        assert_eq!(calls, Some(1), "{code}: one counted call");

        // Through the bus, the retries are core's: one request per attempt (4 attempts for a retryable failure).
        let bus = Bus::new(Arc::new(backend));
        let t = Topic::<Job>::new(name, TopicConfig::at_least_once());
        let e = t.publish(&bus, &Job { n: 3 }).await.expect_err("the endpoint fails every call");
        assert_ne!(e.kind(), ErrorKind::NotFound);
        let attempts = if retryable { 4 } else { 1 };
        assert_eq!(requests.load(SeqCst), 1 + attempts, "{code}: one request per attempt of core's");
        assert_eq!(publish_calls(&bus), 1 + attempts);
        eprintln!("gcp: {code}: a driver call made 1 request, a bus publish {attempts}");
    }
}
