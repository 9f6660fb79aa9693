//! AWS-specific behaviour against LocalStack: provisioning modes, the queue policy, the SQS redrive backstop, and the
//! size limit.

mod support;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName as Q;
use serde::{Deserialize, Serialize};
use tidings_aws::{AwsConfig, Provisioning};
use tidings_core::backend::{SubscriptionSpec, TopicSpec};
use tidings_core::{Backend, Bus, ErrorKind, RetryPolicy, SubscriptionConfig, Topic, TopicConfig};
use tidings_testkit::conformance::foreign::OrderedProbe;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Event {
    text: String,
}

fn unique(base: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{base}-{}", &id[id.len() - 10..])
}

fn spec(topic: &str, config: TopicConfig, sub: SubscriptionConfig) -> SubscriptionSpec {
    let t = TopicSpec::new(topic, topic, config);
    SubscriptionSpec::new(t, "sub", format!("{topic}--sub"), sub)
}

async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&support::sdk().await)
}

async fn queue_attrs(name: &str) -> std::collections::HashMap<Q, String> {
    let sqs = sqs().await;
    let url = sqs.get_queue_url().queue_name(name).send().await.unwrap().queue_url().unwrap().to_string();
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(Q::All)
        .send()
        .await
        .unwrap()
        .attributes()
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn provisioning_is_idempotent_and_sets_policy_redrive_and_visibility() {
    let backend = support::backend(support::config()).await;
    let topic = unique("idem");
    let cfg = SubscriptionConfig::DEFAULT.with_ack_deadline(Duration::from_secs(7)).with_max_retries(4);
    let s = spec(&topic, TopicConfig::at_least_once(), cfg);
    backend.subscription(&s).await.unwrap();
    let before = backend.api_calls().total();
    backend.subscription(&s).await.expect("second provisioning succeeds");
    assert!(backend.api_calls().total() > before);
    let attrs = queue_attrs(&format!("{topic}--sub")).await;
    assert_eq!(attrs[&Q::VisibilityTimeout], "7", "visibility timeout = ack deadline");
    let redrive: serde_json::Value = serde_json::from_str(&attrs[&Q::RedrivePolicy]).unwrap();
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "6",
        "max retries 4 = 5 attempts, +1 backstop"
    );
    assert!(redrive["deadLetterTargetArn"].as_str().unwrap().ends_with(&format!("{topic}--sub-dlq")));
    // Least privilege: only this topic may send to the queue.
    let policy: serde_json::Value = serde_json::from_str(&attrs[&Q::Policy]).unwrap();
    let st = &policy["Statement"][0];
    assert_eq!(st["Effect"], "Allow");
    assert_eq!(st["Principal"]["Service"], "sns.amazonaws.com");
    assert_eq!(st["Action"], "sqs:SendMessage");
    assert_eq!(st["Resource"], attrs[&Q::QueueArn].as_str());
    let source = st["Condition"]["ArnEquals"]["aws:SourceArn"].as_str().unwrap();
    assert!(source.starts_with("arn:aws:sns:") && source.ends_with(&format!(":{topic}")), "{source}");
}

#[tokio::test]
async fn ordered_and_exactly_once_topics_are_fifo() {
    let backend = support::backend(support::config()).await;
    let topic = unique("fifo");
    backend
        .subscription(&spec(&topic, TopicConfig::exactly_once().ordered(), SubscriptionConfig::DEFAULT))
        .await
        .unwrap();
    let attrs = queue_attrs(&format!("{topic}--sub.fifo")).await;
    assert_eq!(attrs[&Q::FifoQueue], "true");
    assert_eq!(queue_attrs(&format!("{topic}--sub-dlq.fifo")).await[&Q::FifoQueue], "true");
}

#[tokio::test]
async fn verify_reports_a_mismatch_naming_resource_setting_and_both_values() {
    let topic = unique("verify");
    let auto = support::backend(support::config()).await;
    let declared = SubscriptionConfig::DEFAULT.with_ack_deadline(Duration::from_secs(30));
    auto.subscription(&spec(&topic, TopicConfig::at_least_once(), declared)).await.unwrap();
    let verify = support::backend(support::provisioned(Provisioning::Verify)).await;
    verify.subscription(&spec(&topic, TopicConfig::at_least_once(), declared)).await.expect("matching settings verify");
    let changed = declared.with_ack_deadline(Duration::from_secs(45));
    let e = verify.subscription(&spec(&topic, TopicConfig::at_least_once(), changed)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Mismatch);
    let m = e.to_string();
    assert!(m.contains(&format!("{topic}--sub")) && m.contains("VisibilityTimeout"), "{m}");
    assert!(m.contains("\"30\"") && m.contains("\"45\""), "{m}");
    let calls_before = verify.api_calls().snapshot();
    let missing = TopicSpec::new("x", unique("missing"), TopicConfig::at_least_once());
    assert_eq!(verify.topic(&missing).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        verify.api_calls().snapshot().get("sns:CreateTopic"),
        calls_before.get("sns:CreateTopic"),
        "verify creates nothing"
    );
}

#[tokio::test]
async fn provisioning_off_needs_the_resources_in_config() {
    let off = support::backend(support::provisioned(Provisioning::Off)).await;
    let orders = TopicSpec::new("orders", "orders", TopicConfig::at_least_once());
    let e = off.topic(&orders).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("aws.topic_arns.\"orders\""), "{e}");
    assert_eq!(off.api_calls().total(), 0, "off makes no admin calls");
}

#[tokio::test]
async fn a_consumer_that_never_acks_ends_in_the_dlq_through_sqs_redrive() {
    // The runtime normally dead-letters itself; SQS's RedrivePolicy is the backstop for a consumer that dies on every
    // delivery (it never gets to decide).
    let backend = support::backend(support::config()).await;
    let topic: &'static str = Box::leak(unique("redrive").into_boxed_str());
    let t = Topic::<Event>::new(topic, TopicConfig::at_least_once());
    let cfg =
        SubscriptionConfig::DEFAULT.with_ack_deadline(Duration::from_secs(1)).with_max_retries(RetryPolicy::NO_RETRIES);
    let bus = Bus::new(Arc::new(backend.clone()));
    let s = bus.subscription_spec(&t, "sub", cfg);
    let driver = backend.subscription(&s).await.unwrap();
    t.publish(&bus, &Event { text: "crash".into() }).await.unwrap();
    let mut receives = 0;
    for _ in 0..20 {
        let got = driver.receive(1, Duration::from_secs(1)).await.unwrap();
        receives += got.len();
        if tidings_core::dead_letter::peek(&*driver.clone().dead_letter_queue().unwrap(), 10).await.unwrap().len() == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let dead = tidings_core::dead_letter::peek(&*driver.clone().dead_letter_queue().unwrap(), 10).await.unwrap();
    assert_eq!(dead.len(), 1, "moved to the DLQ after maxReceiveCount receives");
    assert_eq!(receives, 2, "max retries 0 = 1 attempt; SQS moves it on the receive after the backstop's 2nd");
    assert_eq!(dead[0].decode::<Event>().unwrap(), Event { text: "crash".into() });
    assert!(dead[0].reason.contains("redrive"), "{}", dead[0].reason);
}

#[tokio::test]
async fn a_message_at_the_size_limit_is_accepted_by_sns() {
    let backend = support::backend(support::config()).await;
    let bus = Bus::new(Arc::new(backend));
    let topic: &'static str = Box::leak(unique("limit").into_boxed_str());
    let t = Topic::<Event>::new(topic, TopicConfig::at_least_once());
    let limit = bus.capabilities().max_message_size;
    let opts = tidings_core::PublishOptions::new().attribute("k", "v");
    let overhead = r#"{"text":""}"#.len() + 2;
    let at_limit = Event { text: "x".repeat(limit - overhead) };
    t.publish_with(&bus, &at_limit, opts.clone()).await.expect("a message at the documented limit fits SNS's 256 KiB");
    let over = Event { text: "x".repeat(limit - overhead + 1) };
    let e = t.publish_with(&bus, &over, opts).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MessageTooLarge);
}

#[tokio::test]
async fn messages_from_foreign_producers_go_to_the_dlq_with_a_reason() {
    // Sent straight to the subscription queue with the plain SDK, as another service (or the aws CLI) would: no
    // tidings metadata, bodies that are not the subscription's type, and more attributes than AWS allows.
    let backend = support::backend(support::config()).await;
    let bus = Bus::new(Arc::new(backend));
    let topic: &'static str = Box::leak(unique("foreign").into_boxed_str());
    let t = Topic::<Event>::new(topic, TopicConfig::at_least_once());
    let seen = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let s = seen.clone();
    let cfg = SubscriptionConfig::DEFAULT.with_ack_deadline(Duration::from_secs(2));
    let sub = bus
        .subscribe(&t, "sub", cfg, move |_m: tidings_core::Message<Event>| {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok(()) }
        })
        .await
        .unwrap();
    let sqs = sqs().await;
    let url =
        sqs.get_queue_url().queue_name(format!("{topic}--sub")).send().await.unwrap().queue_url().unwrap().to_string();
    let bodies = ["not json", "{\"wrong\": true}", "[1,2,3]", "null", "   "];
    for b in bodies {
        sqs.send_message().queue_url(&url).message_body(b).send().await.unwrap();
    }
    let mut many = sqs.send_message().queue_url(&url).message_body("{\"text\": 5}");
    for i in 0..11 {
        let v = aws_sdk_sqs::types::MessageAttributeValue::builder().data_type("String").string_value(format!("v{i}"));
        many = many.message_attributes(format!("a{i:02}"), v.build().unwrap());
    }
    many.send().await.unwrap();
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = sub.dead_letters(20).await.unwrap();
        if dead.len() > bodies.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dead.len(), bodies.len() + 1, "each foreign message is dead-lettered");
    for d in &dead {
        assert!(d.reason.contains("poison"), "{}", d.reason);
        assert_eq!(d.attempts, 1, "not retried");
    }
    let many = dead.iter().find(|d| d.payload.as_ref() == b"{\"text\": 5}").unwrap();
    assert!(many.reason.contains("2 attributes not kept"), "{}", many.reason);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0, "the handler never saw them");
    bus.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn plain_http_to_a_remote_endpoint_is_refused() {
    let mut config = AwsConfig::default();
    config.region = Some("us-east-1".into());
    config.endpoint_url = Some("http://sqs.example.com".into());
    let e = tidings_aws::AwsBackend::new(config).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("aws.endpoint_url") && e.to_string().contains("https"), "{e}");
}

#[test]
fn the_secret_key_never_reaches_logs_debug_output_or_errors() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    const SECRET: &str = "tidings-secret-key-4242-do-not-log";
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut seen = String::new();
    rt.block_on(async {
        use aws_sdk_sqs::config::Credentials;
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(support::endpoint())
            .credentials_provider(Credentials::new("test", SECRET, None, None, "tidings-tests"))
            .load()
            .await;
        let backend = tidings_aws::AwsBackend::with_sdk_config(&sdk, support::config()).unwrap();
        let bus = Bus::new(Arc::new(backend.clone()));
        let t = Topic::<Event>::new(Box::leak(unique("secret").into_boxed_str()), TopicConfig::at_least_once());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        bus.subscribe(&t, "sub", SubscriptionConfig::DEFAULT, move |_m: tidings_core::Message<Event>| {
            let _ = tx.send(());
            async { Ok(()) }
        })
        .await
        .unwrap();
        t.publish(&bus, &Event { text: "hello".into() }).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap();
        let err = t.publish(&bus, &Event { text: "x".repeat(300_000) }).await.unwrap_err();
        seen = format!("{backend:?} {bus:?} {err:?} {err} {:?}", bus.settings());
        bus.shutdown(Duration::from_secs(2)).await;
    });
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(logs.len() > 1000, "TRACE logs were captured ({} bytes)", logs.len());
    assert!(!logs.contains(SECRET), "the secret key appears in the logs");
    assert!(!seen.contains(SECRET), "the secret key appears in Debug output or errors");
}

#[tokio::test]
async fn ordered_messages_from_another_producer_keep_their_group_as_ordering_key() {
    // Published to the FIFO topic with the plain SDK, as another service would: a MessageGroupId and no tidings
    // attribute. Each group must reach the handler as its ordering key, in order, one message at a time.
    let backend = support::backend(support::config()).await;
    let bus = Bus::new(Arc::new(backend));
    let topic: &'static str = Box::leak(unique("foreign-fifo").into_boxed_str());
    let probe = OrderedProbe::subscribe(&bus, topic, "sub").await;
    // The topic's ARN, from the queue policy tidings wrote (only that topic may send).
    let attrs = queue_attrs(&format!("{topic}--sub.fifo")).await;
    let policy: serde_json::Value = serde_json::from_str(&attrs[&Q::Policy]).unwrap();
    let arn = policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"].as_str().unwrap().to_string();
    let sns = aws_sdk_sns::Client::new(&support::sdk().await);
    for (key, n, body) in OrderedProbe::messages() {
        sns.publish()
            .topic_arn(&arn)
            .message(body)
            .message_group_id(key)
            .message_deduplication_id(format!("{key}-{n}"))
            .send()
            .await
            .unwrap();
    }
    probe.verify("the MessageGroupId").await;
}
