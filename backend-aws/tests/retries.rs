//! The AWS SDK's own retries are off: the portable layer owns retries, so every driver call is one HTTP call, and a
//! call that keeps failing with a transient error makes exactly one call per attempt of the portable layer (4 attempts
//! in all), not 4 times the SDK's own 3. A local HTTP server stands in for SNS and SQS (or stands between tidings and
//! LocalStack), answers the requests a rule picks with a 500 and counts every request by operation.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use serde::{Deserialize, Serialize};
use tidings_aws::{AwsBackend, AwsConfig, Provisioning};
use tidings_core::{Bus, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u32,
}

static PINGS: Topic<Ping> = Topic::new("pings", TopicConfig::at_least_once());

/// What the fault server does with one request.
enum Answer {
    /// `500 InternalError` in the service's error form.
    Fail,
    /// Passed on to LocalStack, its answer passed back.
    Pass,
    /// `200` with this JSON body (a stand-in SQS), after this delay.
    Reply(String, Duration),
}

/// Decides each request's answer from its operation (`sqs:ReceiveMessage`, `sns:PublishBatch`), its body and how many
/// requests of that operation came before it.
type Rule = Box<dyn Fn(&str, &[u8], usize) -> Answer + Send + Sync>;

/// Requests the fault server saw, by operation: (answered with a 500, answered otherwise).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<BTreeMap<String, (usize, usize)>>>);

impl Seen {
    /// Requests of `op`, failed or not.
    fn calls(&self, op: &str) -> usize {
        self.0.lock().unwrap().get(op).map_or(0, |(f, p)| f + p)
    }

    /// Requests of `op` answered with a 500.
    fn failed(&self, op: &str) -> usize {
        self.0.lock().unwrap().get(op).map_or(0, |c| c.0)
    }

    fn all(&self) -> BTreeMap<String, (usize, usize)> {
        self.0.lock().unwrap().clone()
    }
}

/// Starts the fault server: its endpoint and what it saw. `upstream` (host:port) is where `Answer::Pass` goes.
async fn fault_server(upstream: Option<String>, rule: Rule) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, rule) = (Seen::default(), Arc::new(rule));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            tokio::spawn(serve(sock, upstream.clone(), rule.clone(), s.clone()));
        }
    });
    (format!("http://{addr}"), seen)
}

/// One request off `sock`: its head and body, or `None` once the client closed.
async fn request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let len = header(&head, "content-length").map_or(0, |v| v.parse::<usize>().unwrap_or(0));
    while buf.len() < end + 4 + len {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[end + 4..end + 4 + len].to_vec();
    buf.drain(..end + 4 + len);
    Some((head, body))
}

/// The value of header `name` (lower case) in a request or response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The operation of a request: SQS names it in `x-amz-target` (JSON protocol), SNS in the body's `Action`.
fn operation(head: &str, body: &[u8]) -> String {
    if let Some(t) = header(head, "x-amz-target") {
        return format!("sqs:{}", t.trim_start_matches("AmazonSQS."));
    }
    let body = String::from_utf8_lossy(body);
    let action = body.split('&').find_map(|kv| kv.strip_prefix("Action=")).unwrap_or("?");
    format!("sns:{action}")
}

async fn serve(mut sock: TcpStream, upstream: Option<String>, rule: Arc<Rule>, seen: Seen) {
    let mut buf = Vec::new();
    while let Some((head, body)) = request(&mut sock, &mut buf).await {
        let op = operation(&head, &body);
        let nth = {
            let seen = seen.0.lock().unwrap();
            let (f, p) = seen.get(&op).copied().unwrap_or_default();
            f + p
        };
        let answer = rule(&op, &body, nth);
        {
            let mut seen = seen.0.lock().unwrap();
            let c = seen.entry(op.clone()).or_default();
            if matches!(answer, Answer::Fail) {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
        let resp = match answer {
            Answer::Fail => failure(op.starts_with("sqs:")),
            Answer::Reply(json, delay) => {
                tokio::time::sleep(delay).await;
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{json}",
                    json.len()
                )
                .into_bytes()
            }
            Answer::Pass => {
                let Some(up) = &upstream else { return };
                let Some(resp) = pass(up, &head, &body).await else { return };
                // The upstream connection closed after its answer: so does this one.
                let _ = sock.write_all(&resp).await;
                return;
            }
        };
        if sock.write_all(&resp).await.is_err() {
            return;
        }
    }
}

/// A 500 in SQS's JSON form or SNS's awsQuery form.
fn failure(sqs: bool) -> Vec<u8> {
    let (kind, extra, body) = if sqs {
        (
            "application/x-amz-json-1.0",
            "x-amzn-query-error: InternalError;Receiver\r\n",
            r#"{"__type":"com.amazonaws.sqs#InternalError","message":"injected by the test"}"#.to_string(),
        )
    } else {
        (
            "text/xml",
            "",
            "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>injected by the test\
             </Message></Error><RequestId>t</RequestId></ErrorResponse>"
                .to_string(),
        )
    };
    format!(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: {kind}\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends one request to `upstream` on a connection of its own, closed after the answer, and returns the answer with
/// `connection: close` (so the client does not reuse this connection).
async fn pass(upstream: &str, head: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).await.ok()?;
    let keep = |l: &&str| !l.to_ascii_lowercase().starts_with("connection:");
    let mut req: String = head.lines().filter(keep).collect::<Vec<_>>().join("\r\n");
    req.push_str("\r\nconnection: close\r\n\r\n");
    up.write_all(req.as_bytes()).await.ok()?;
    up.write_all(body).await.ok()?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).await.ok()?;
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&resp[..end]);
    let mut out: String = head.lines().filter(keep).collect::<Vec<_>>().join("\r\n");
    out.push_str("\r\nconnection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&resp[end + 4..]);
    Some(out)
}

async fn sdk_at(endpoint: String) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tidings-tests"))
        .load()
        .await
}

/// Polls `done` every 50 ms for up to `limit`.
async fn eventually(limit: Duration, mut done: impl FnMut() -> Pin<Box<dyn Future<Output = bool> + Send>>) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_publish_makes_one_sdk_call_per_attempt() {
    let (endpoint, seen) = fault_server(None, Box::new(|_, _, _| Answer::Fail)).await;
    let mut config = AwsConfig::default();
    config.provisioning = Provisioning::Off;
    config.topic_arns.insert("pings".into(), "arn:aws:sns:us-east-1:000000000000:pings".into());
    let bus = Bus::new(Arc::new(AwsBackend::with_sdk_config(&sdk_at(endpoint).await, config).unwrap()));
    let e = PINGS.publish(&bus, &Ping { n: 1 }).await.unwrap_err();
    assert!(e.is_retryable(), "a 500 is transient: {e}");
    assert_eq!(seen.calls("sns:PublishBatch"), 4, "SNS calls for one publish (4 attempts of the portable layer): {e}");
    bus.shutdown(Duration::from_secs(2)).await;
}

/// A stand-in SQS: the first 3 receives fail, the 4th hands out one message, later ones wait 1 s and return none;
/// every `DeleteMessageBatch` fails. The receives are retried by the runtime's receive loop, the ack by the settle
/// route: each attempt is one HTTP call, and the ack gives up after the portable layer's 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receive_and_a_failing_ack_make_one_sdk_call_per_attempt() {
    const FAILED_RECEIVES: usize = 3;
    let message = r#"{"Messages":[{"MessageId":"m-1","ReceiptHandle":"rh-1","Body":"{\"n\":7}",
        "Attributes":{"ApproximateReceiveCount":"1","SentTimestamp":"1700000000000"}}]}"#
        .replace('\n', "");
    let rule: Rule = Box::new(move |op, _, nth| match op {
        "sqs:ReceiveMessage" if nth < FAILED_RECEIVES => Answer::Fail,
        "sqs:ReceiveMessage" if nth == FAILED_RECEIVES => Answer::Reply(message.clone(), Duration::ZERO),
        "sqs:ReceiveMessage" => Answer::Reply("{}".into(), Duration::from_secs(1)),
        _ => Answer::Fail,
    });
    let (endpoint, seen) = fault_server(None, rule).await;
    let mut config = AwsConfig::default();
    config.provisioning = Provisioning::Off;
    config.wait_time = Duration::from_secs(1);
    config.topic_arns.insert("pings".into(), "arn:aws:sns:us-east-1:000000000000:pings".into());
    config.queue_urls.insert("pings.sub".into(), "http://sqs.invalid/000000000000/pings--sub".into());
    config.dlq_urls.insert("pings.sub".into(), "http://sqs.invalid/000000000000/pings--sub-dlq".into());
    let backend = AwsBackend::with_sdk_config(&sdk_at(endpoint).await, config).unwrap();
    let bus = Bus::new(Arc::new(backend.clone()));
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let handler = move |m: Message<Ping>| {
        let r = r.clone();
        async move {
            assert_eq!(m.n, 7);
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    };
    let sub = bus.subscribe(&PINGS, "sub", SubscriptionConfig::default(), handler).await.unwrap();
    let acked = eventually(Duration::from_secs(15), || {
        let seen = seen.clone();
        Box::pin(async move { seen.calls("sqs:DeleteMessageBatch") >= 4 })
    })
    .await;
    assert!(acked, "the ack's 4 attempts were made: {:?}", seen.all());
    // Past the longest backoff between attempts (400 ms, jittered up to 600 ms): no fifth attempt follows.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sub.shutdown(Duration::from_secs(2)).await;
    let driver_calls = backend.api_calls().snapshot();
    let http = seen.all();
    eprintln!("HTTP requests by operation (500s, other answers): {http:?}; driver calls: {driver_calls:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(seen.calls("sqs:DeleteMessageBatch"), 4, "one ack, 4 attempts of the portable layer, 1 call each");
    assert_eq!(driver_calls["sqs:DeleteMessageBatch"], 4, "4 driver calls for the ack");
    assert_eq!(seen.failed("sqs:ReceiveMessage"), FAILED_RECEIVES);
    assert!(seen.calls("sqs:ReceiveMessage") > FAILED_RECEIVES, "the receive loop tried again and got the message");
    assert_eq!(
        seen.calls("sqs:ReceiveMessage") as u64,
        driver_calls["sqs:ReceiveMessage"],
        "one HTTP call per receive: a failed receive is not retried by the SDK"
    );
    bus.shutdown(Duration::from_secs(2)).await;
}

/// Against LocalStack through the fault server: the first attempt of every distinct request to create a topic or a
/// queue, to publish and to ack fails, and so does every third receive. Every message is still handled exactly once
/// and acked (the subscription's backlog drains), and every driver call is exactly one HTTP call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_injected_500s_every_message_is_handled_once_and_acked() {
    const MESSAGES: u32 = 60;
    let _ = support::sdk().await; // LocalStack is up (or a clear panic)
    let upstream = support::endpoint().trim_start_matches("http://").to_string();
    let distinct = Mutex::new(HashSet::<(String, Vec<u8>)>::new());
    let rule: Rule = Box::new(move |op, body, nth| match op {
        "sqs:ReceiveMessage" if nth % 3 == 2 => Answer::Fail,
        "sns:CreateTopic" | "sqs:CreateQueue" | "sns:PublishBatch" | "sqs:DeleteMessageBatch"
            if distinct.lock().unwrap().insert((op.to_string(), body.to_vec())) =>
        {
            Answer::Fail
        }
        _ => Answer::Pass,
    });
    let (endpoint, seen) = fault_server(Some(upstream), rule).await;
    let backend = AwsBackend::with_sdk_config(&sdk_at(endpoint).await, support::config()).unwrap();
    let bus = Bus::new(Arc::new(backend.clone()));
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name: &'static str = Box::leak(format!("retries-{}", &id[id.len() - 10..]).into_boxed_str());
    let topic: Topic<Ping> = Topic::new(name, TopicConfig::at_least_once());
    let runs: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let r = runs.clone();
    let handler = move |m: Message<Ping>| {
        let r = r.clone();
        async move {
            *r.lock().unwrap().entry(m.n).or_default() += 1;
            Ok(())
        }
    };
    let sub = bus.subscribe(&topic, "sub", SubscriptionConfig::default(), handler).await.expect("subscribe");
    let pings: Vec<Ping> = (0..MESSAGES).map(|n| Ping { n }).collect();
    for chunk in pings.chunks(10) {
        topic.publish_batch(&bus, chunk.iter().map(|p| (p, PublishOptions::default()))).await.expect("publish");
    }
    let handled = eventually(Duration::from_secs(60), || {
        let runs = runs.clone();
        Box::pin(async move { runs.lock().unwrap().len() == MESSAGES as usize })
    })
    .await;
    assert!(handled, "handled {} of {MESSAGES}: {:?}", runs.lock().unwrap().len(), seen.all());
    // Acked: nothing is left in the queue, in flight or not (a lost ack would leave its message there, invisible).
    let drained = eventually(Duration::from_secs(30), || {
        let sub = sub.clone();
        Box::pin(async move { matches!(sub.backlog().await, Ok(Some(0))) })
    })
    .await;
    sub.shutdown(Duration::from_secs(5)).await;
    bus.shutdown(Duration::from_secs(5)).await;
    let driver_calls = backend.api_calls().snapshot();
    let http = seen.all();
    eprintln!("HTTP requests by operation (500s, other answers): {http:?}; driver calls: {driver_calls:?}");
    assert!(drained, "the backlog drained: every message was acked");
    let runs = runs.lock().unwrap();
    let twice: Vec<_> = runs.iter().filter(|(_, &c)| c != 1).collect();
    assert!(twice.is_empty(), "handlers that did not run exactly once (message, runs): {twice:?}");
    let injected =
        ["sqs:ReceiveMessage", "sqs:DeleteMessageBatch", "sns:PublishBatch", "sqs:CreateQueue", "sns:CreateTopic"];
    for op in injected {
        assert!(seen.failed(op) > 0, "500s were injected into {op}: {http:?}");
    }
    for (op, (failed, passed)) in &http {
        assert_eq!(
            driver_calls.get(op.as_str()).copied(),
            Some((failed + passed) as u64),
            "{op}: one HTTP call per driver call ({failed} answered 500)"
        );
    }
}
