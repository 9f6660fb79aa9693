//! The AWS SDK's own retries are off: the portable layer owns retries, so a publish that keeps failing with a
//! transient error makes exactly one SNS call per attempt of the portable layer (4 attempts in all), not 4 times the
//! SDK's own 3. A local HTTP server stands in for SNS and answers every request with a 500.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::Credentials;
use serde::{Deserialize, Serialize};
use tidings_aws::{AwsBackend, AwsConfig, Provisioning};
use tidings_core::{Bus, Topic, TopicConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u32,
}

static PINGS: Topic<Ping> = Topic::new("pings", TopicConfig::at_least_once());

/// Answers every HTTP request with `500 InternalFailure` (SNS's awsQuery error form) and counts the requests.
async fn failing_sns() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // One request: headers, then Content-Length bytes of body.
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    c.fetch_add(1, Ordering::SeqCst);
                    let body = "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>\
                                <Message>injected by the test</Message></Error><RequestId>t</RequestId></ErrorResponse>";
                    let resp = format!(
                        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_publish_makes_one_sdk_call_per_attempt() {
    let (endpoint, calls) = failing_sns().await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tidings-tests"))
        .load()
        .await;
    let mut config = AwsConfig::default();
    config.provisioning = Provisioning::Off;
    config.topic_arns.insert("pings".into(), "arn:aws:sns:us-east-1:000000000000:pings".into());
    let bus = Bus::new(Arc::new(AwsBackend::with_sdk_config(&sdk, config).unwrap()));
    let e = PINGS.publish(&bus, &Ping { n: 1 }).await.unwrap_err();
    assert!(e.is_retryable(), "a 500 is transient: {e}");
    assert_eq!(calls.load(Ordering::SeqCst), 4, "SNS calls for one publish (4 attempts of the portable layer): {e}");
    bus.shutdown(Duration::from_secs(2)).await;
}
