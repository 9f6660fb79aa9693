//! API calls per 1,000 messages and throughput against LocalStack and the Pub/Sub emulator, tidings beside a minimal
//! hand-written loop on the same SDK doing the same work (publish N, consume and ack N) in the same run. Emulator
//! throughput says nothing about the clouds'.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_core::backend::{SubscriptionSpec, TopicSpec};
use tidings_core::{Backend, Bus, Message, SubscriptionConfig, Topic, TopicConfig};

use crate::util::{event, Event};

/// Concurrent publishing tasks: a service handling 100 requests at once.
const PUBLISHERS: u64 = 100;

fn unique(base: &str) -> &'static str {
    let id = uuid::Uuid::now_v7().simple().to_string();
    Box::leak(format!("{base}-{}", &id[id.len() - 10..]).into_boxed_str())
}

/// Publishes `n` events from `PUBLISHERS` concurrent tasks (as request handlers would) and waits until `done` reaches `n`.
async fn run_tidings(bus: &Bus, topic: &Topic<Event>, n: u64, done: &AtomicU64) -> (f64, f64) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..PUBLISHERS {
        let (bus, topic) = (bus.clone(), Topic::<Event>::new(topic.name(), topic.config()));
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(PUBLISHERS as usize) {
                topic.publish(&bus, &event(i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let published = start.elapsed().as_secs_f64();
    while done.load(Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (n as f64 / published, n as f64 / start.elapsed().as_secs_f64())
}

fn counting(
    done: &Arc<AtomicU64>,
) -> impl Fn(Message<Event>) -> std::future::Ready<tidings_core::HandlerResult> + Send + Sync + 'static {
    let done = done.clone();
    move |_m| {
        done.fetch_add(1, Relaxed);
        std::future::ready(Ok(()))
    }
}

/// One tidings round against LocalStack on a fresh topic: (publish msgs/s, deliveries/s, API calls by operation).
async fn aws_tidings_round(
    backend: &tidings_aws::AwsBackend,
    n: u64,
) -> (f64, f64, std::collections::BTreeMap<&'static str, u64>) {
    let bus = Bus::new(Arc::new(backend.clone()));
    let topic = Topic::<Event>::new(unique("bench-aws"), TopicConfig::at_least_once());
    let done = Arc::new(AtomicU64::new(0));
    let sub = bus.subscribe(&topic, "calls", SubscriptionConfig::default(), counting(&done)).await.unwrap();
    let before = backend.api_calls().snapshot();
    let (publish_rate, rate) = run_tidings(&bus, &topic, n, &done).await;
    sub.shutdown(Duration::from_secs(5)).await;
    let after = backend.api_calls().snapshot();
    let calls = after.iter().map(|(op, c)| (*op, c - before.get(op).copied().unwrap_or(0))).collect();
    (publish_rate, rate, calls)
}

/// The same work by hand on a fresh topic: PublishBatch of 10 from the same tasks, one ReceiveMessage(10) /
/// DeleteMessageBatch loop. Deliveries/s.
async fn aws_raw_round(
    backend: &tidings_aws::AwsBackend,
    sns: &aws_sdk_sns::Client,
    sqs: &aws_sdk_sqs::Client,
    n: u64,
) -> f64 {
    let raw_topic = unique("bench-raw");
    let spec = raw_spec(raw_topic);
    backend.subscription(&spec).await.unwrap();
    let arn = sns.create_topic().name(raw_topic).send().await.unwrap().topic_arn().unwrap().to_string();
    let url = sqs.get_queue_url().queue_name(&spec.resource).send().await.unwrap().queue_url().unwrap().to_string();
    let raw_done = Arc::new(AtomicU64::new(0));
    let consumer = {
        let (sqs, url, raw_done) = (sqs.clone(), url.clone(), raw_done.clone());
        tokio::spawn(async move {
            while raw_done.load(Relaxed) < n {
                let out = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                let entries: Vec<_> = out
                    .messages()
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        let _: Event = serde_json::from_str(m.body().unwrap()).unwrap();
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle().unwrap())
                            .build()
                            .unwrap()
                    })
                    .collect();
                if !entries.is_empty() {
                    let k = entries.len() as u64;
                    sqs.delete_message_batch().queue_url(&url).set_entries(Some(entries)).send().await.unwrap();
                    raw_done.fetch_add(k, Relaxed);
                }
            }
        })
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..PUBLISHERS {
        let (sns, arn) = (sns.clone(), arn.clone());
        tasks.push(tokio::spawn(async move {
            let mine: Vec<u64> = (w..n).step_by(PUBLISHERS as usize).collect();
            for chunk in mine.chunks(10) {
                let entries = chunk
                    .iter()
                    .map(|i| {
                        aws_sdk_sns::types::PublishBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message(serde_json::to_string(&event(*i)).unwrap())
                            .build()
                            .unwrap()
                    })
                    .collect();
                sns.publish_batch()
                    .topic_arn(&arn)
                    .set_publish_batch_request_entries(Some(entries))
                    .send()
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    consumer.await.unwrap();
    n as f64 / start.elapsed().as_secs_f64()
}

/// `n` messages per round, in the order tidings, raw, raw, tidings: LocalStack's speed drifts during a run, and this
/// order cancels a steady drift. Rates are the means of each side's two rounds; calls are counted over tidings' rounds.
pub async fn aws(n: u64) -> String {
    use tidings_aws::{AwsBackend, AwsConfig};
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into());
    let mut config = AwsConfig::default();
    config.region = Some("us-east-1".into());
    config.endpoint_url = Some(endpoint);
    let backend = AwsBackend::new(config).await.expect("AWS backend (LocalStack: scripts/localstack start)");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let (sns, sqs) = (aws_sdk_sns::Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk));
    if std::env::var("TIDINGS_BENCH_PROFILE").is_ok_and(|v| v == "raw") {
        // Profiling aid: only the raw SDK side, with this process's CPU per 1,000 messages.
        let c0 = crate::util::cpu_seconds();
        let rate = aws_raw_round(&backend, &sns, &sqs, n).await;
        let cpu_ms = (crate::util::cpu_seconds() - c0) * 1e6 / n as f64;
        return format!(
            "{{\"bench\":\"aws_calls_profile_raw\",\"deliveries\":{rate:.0},\"cpu_ms_per_1k\":{cpu_ms:.0}}}"
        );
    }
    if std::env::var("TIDINGS_BENCH_PROFILE").is_ok() {
        // Profiling aid: only the tidings side, with this process's CPU per 1,000 messages (`=raw`: the raw side).
        let c0 = crate::util::cpu_seconds();
        let (_, rate, _) = aws_tidings_round(&backend, n).await;
        let cpu_ms = (crate::util::cpu_seconds() - c0) * 1e6 / n as f64;
        return format!("{{\"bench\":\"aws_calls_profile\",\"deliveries\":{rate:.0},\"cpu_ms_per_1k\":{cpu_ms:.0}}}");
    }
    let cpu = crate::util::cpu_seconds;
    let c0 = cpu();
    let (p1, t1, c1) = aws_tidings_round(&backend, n).await;
    let c_t1 = cpu();
    let r1 = aws_raw_round(&backend, &sns, &sqs, n).await;
    let r2 = aws_raw_round(&backend, &sns, &sqs, n).await;
    let c_r = cpu();
    let (p2, t2, c2) = aws_tidings_round(&backend, n).await;
    let c_t2 = cpu();
    // This process's CPU per 1,000 messages: on the 2 cores it shares with LocalStack, the client's CPU is LocalStack's loss.
    let (tidings_cpu_ms, raw_cpu_ms) =
        ((c_t1 - c0 + c_t2 - c_r) * 1e6 / (2 * n) as f64, (c_r - c_t1) * 1e6 / (2 * n) as f64);
    let (publish_rate, rate, raw_rate) = ((p1 + p2) / 2.0, (t1 + t2) / 2.0, (r1 + r2) / 2.0);
    let d = |op: &str| {
        (c1.get(op).copied().unwrap_or(0) + c2.get(op).copied().unwrap_or(0)) as f64 * 1000.0 / (2 * n) as f64
    };
    let publish = d("sns:PublishBatch");
    let consume = d("sqs:ReceiveMessage") + d("sqs:DeleteMessageBatch") + d("sqs:ChangeMessageVisibilityBatch");
    format!(
        "{{\"bench\":\"aws_calls\",\"messages\":{n},\"rounds\":2,\"publish_calls_per_1k\":{publish:.1},\"consume_calls_per_1k\":{consume:.1},\
         \"receive_calls_per_1k\":{:.1},\"delete_calls_per_1k\":{:.1},\"visibility_calls_per_1k\":{:.1},\
         \"tidings_publish_msgs_per_s\":{publish_rate:.0},\"tidings_msgs_per_s\":{rate:.0},\"raw_sdk_msgs_per_s\":{raw_rate:.0},\
         \"vs_raw_sdk\":{:.2},\"tidings_client_cpu_ms_per_1k\":{tidings_cpu_ms:.0},\"raw_client_cpu_ms_per_1k\":{raw_cpu_ms:.0},\
         \"note\":\"LocalStack on the same 2 cores; says nothing about AWS throughput\"}}",
        d("sqs:ReceiveMessage"),
        d("sqs:DeleteMessageBatch"),
        d("sqs:ChangeMessageVisibilityBatch"),
        rate / raw_rate
    )
}

pub async fn gcp(n: u64) -> String {
    use tidings_gcp::{GcpBackend, GcpConfig};
    let emulator = std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| "127.0.0.1:8085".into());
    let config = |ep: &str| {
        let mut c = GcpConfig::default();
        c.project_id = Some("tidings-test".into());
        c.endpoint = Some(format!("http://{ep}"));
        c
    };
    // Publisher and subscriber on backends of their own: the publisher's `pubsub:Publish` counter is its Publish
    // requests (one unary REST call each, nothing batched or retried below it).
    let publisher_bus = Bus::new(Arc::new(GcpBackend::new(config(&emulator)).await.unwrap()));
    let calls = || publisher_bus.api_calls().and_then(|c| c.snapshot().get("pubsub:Publish").copied()).unwrap_or(0);
    let subscriber = GcpBackend::new(config(&emulator)).await.unwrap();
    let subscriber_bus = Bus::new(Arc::new(subscriber.clone()));
    let topic = Topic::<Event>::new(unique("bench-gcp"), TopicConfig::at_least_once());
    let done = Arc::new(AtomicU64::new(0));
    subscriber_bus.subscribe(&topic, "calls", SubscriptionConfig::default(), counting(&done)).await.unwrap();
    topic.publish(&publisher_bus, &event(u64::MAX)).await.unwrap(); // provisions the topic; not counted
    while done.load(Relaxed) < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done.store(0, Relaxed);
    let before = calls();
    let (publish_rate, rate) = run_tidings(&publisher_bus, &topic, n, &done).await;
    let publish = (calls() - before) as f64 * 1000.0 / n as f64;
    subscriber_bus.shutdown(Duration::from_secs(5)).await;

    // The same work by hand with the same crate: one Publisher (default batching), one streaming pull with acks.
    let raw_topic = unique("bench-raw");
    let spec = raw_spec(raw_topic);
    subscriber.provision(&spec).await.unwrap();
    let anon = || google_cloud_auth::credentials::anonymous::Builder::new().build();
    let ep = format!("http://{emulator}");
    let base = google_cloud_pubsub::client::BasePublisher::builder()
        .with_endpoint(&ep)
        .with_credentials(anon())
        .build()
        .await
        .unwrap();
    let publisher = base.publisher(format!("projects/tidings-test/topics/{raw_topic}")).build();
    let client = google_cloud_pubsub::client::Subscriber::builder()
        .with_endpoint(&ep)
        .with_credentials(anon())
        .build()
        .await
        .unwrap();
    let mut stream = client.subscribe(format!("projects/tidings-test/subscriptions/{}", spec.resource)).build();
    let raw_done = Arc::new(AtomicU64::new(0));
    let rd = raw_done.clone();
    let consumer = tokio::spawn(async move {
        while rd.load(Relaxed) < n {
            let Some(Ok((m, h))) = stream.next().await else { break };
            let _: Event = serde_json::from_slice(&m.data).unwrap();
            h.ack();
            rd.fetch_add(1, Relaxed);
        }
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..PUBLISHERS {
        let publisher = publisher.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(PUBLISHERS as usize) {
                let data = serde_json::to_vec(&event(i)).unwrap();
                publisher.publish(google_cloud_pubsub::model::Message::new().set_data(data)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    consumer.await.unwrap();
    let raw_rate = n as f64 / start.elapsed().as_secs_f64();
    format!(
        "{{\"bench\":\"gcp_calls\",\"messages\":{n},\"publish_calls_per_1k\":{publish:.1},\"consume_calls_per_1k\":null,\
         \"tidings_publish_msgs_per_s\":{publish_rate:.0},\"tidings_msgs_per_s\":{rate:.0},\"raw_sdk_msgs_per_s\":{raw_rate:.0},\
         \"vs_raw_sdk\":{:.2},\"note\":\"publish requests counted by the backend (one unary Publish each); consumption is one \
         streaming pull (acks flow on it), so per-message consume calls are not meaningful; emulator on the same 2 cores\"}}",
        rate / raw_rate
    )
}

/// The subscription the hand-written SDK loops consume from (provisioned through tidings, used raw).
fn raw_spec(raw_topic: &str) -> SubscriptionSpec {
    SubscriptionSpec::new(
        TopicSpec::new(raw_topic, raw_topic, TopicConfig::at_least_once()),
        "raw",
        format!("{raw_topic}--raw"),
        SubscriptionConfig::default(),
    )
}
