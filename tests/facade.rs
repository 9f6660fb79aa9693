//! The facade: backend selection from config, name mapping, config overrides, and the testing helpers.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::{ErrorKind, HandlerError, Message, Settings, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Signup {
    id: u32,
}

static SIGNUPS: Topic<Signup> = Topic::new("signups", TopicConfig::at_least_once());

#[tokio::test]
async fn nothing_configured_means_the_local_bus() {
    let bus = tidings::from_settings(Settings::load(Default::default()).unwrap()).await.unwrap();
    assert_eq!(bus.backend_name(), "local");
}

#[tokio::test]
async fn unknown_backend_is_a_clear_error() {
    let e = tidings::from_settings(Settings::from_toml("backend = \"kafka\"").unwrap()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let m = e.to_string();
    assert!(m.contains("\"kafka\"") && m.contains("TIDINGS_BACKEND") && m.contains("local, aws, gcp, nats"), "{m}");
}

#[tokio::test]
async fn backend_whose_feature_is_off_names_the_feature() {
    let compiled = |n: &str| {
        (n == "aws" && cfg!(feature = "aws"))
            || (n == "gcp" && cfg!(feature = "gcp"))
            || (n == "nats" && cfg!(feature = "nats"))
    };
    let off: Vec<&str> = ["aws", "gcp", "nats"].into_iter().filter(|n| !compiled(n)).collect();
    for name in off {
        let e =
            tidings::from_settings(Settings::from_toml(&format!("backend = \"{name}\"")).unwrap()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains(&format!("Cargo feature `{name}`")), "{e}");
    }
}

#[tokio::test]
async fn local_section_is_read_and_bad_values_name_the_key() {
    let bus = tidings::from_settings(Settings::from_toml("[local]\nmax_message_size = 1000").unwrap()).await.unwrap();
    assert_eq!(bus.capabilities().max_message_size, 1000);
    let e = SIGNUPS.publish(&bus, &Signup { id: 1 }).await.map(|_| ());
    assert!(e.is_ok());
    let e =
        tidings::from_settings(Settings::from_toml("[local]\nmax_message_size = \"big\"").unwrap()).await.unwrap_err();
    assert!(e.to_string().contains("[local]") && e.to_string().contains("big"), "{e}");
    let e = tidings::from_settings(Settings::from_toml("[local]\nmax_mesage_size = 3").unwrap()).await.unwrap_err();
    assert!(e.to_string().contains("max_mesage_size"), "{e}");
}

#[tokio::test]
async fn names_map_through_prefix_and_overrides() {
    let s = Settings::from_toml(
        "name_prefix = \"prod-\"\n[names]\nsignups = \"user-signups\"\n\"signups.email\" = \"mailer\"",
    )
    .unwrap();
    let bus = tidings::from_settings(s).await.unwrap();
    let spec = bus.subscription_spec(&SIGNUPS, "email", SubscriptionConfig::default());
    assert_eq!(spec.topic.resource, "prod-user-signups");
    assert_eq!(spec.resource, "prod-mailer");
    let spec = bus.subscription_spec(&SIGNUPS, "analytics", SubscriptionConfig::default());
    assert_eq!(spec.resource, "prod-signups--analytics");
}

#[tokio::test]
async fn config_overrides_subscription_settings_declared_in_code() {
    let s = Settings::from_toml(
        "[subscriptions.signups.email]\nmax_retries = 0\nmax_concurrency = 7\nmin_backoff = \"1s\"",
    )
    .unwrap();
    let bus = tidings::from_settings(s).await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let sub = bus
        .subscribe(&SIGNUPS, "email", SubscriptionConfig::default(), move |_m: Message<Signup>| {
            c.fetch_add(1, SeqCst);
            async { Err(HandlerError::retry("smtp down")) }
        })
        .await
        .unwrap();
    assert_eq!(sub.config().retry.max_retries, 0);
    assert_eq!(sub.config().max_concurrency, 7);
    assert_eq!(sub.config().retry.min_backoff, Duration::from_secs(1));
    assert_eq!(sub.config().ack_deadline, Duration::from_secs(30), "untouched settings keep the code's value");
    SIGNUPS.publish(&bus, &Signup { id: 1 }).await.unwrap();
    assert!(sub.wait_idle(Duration::from_secs(5)).await.unwrap());
    assert_eq!(calls.load(SeqCst), 1, "max_retries = 0 from config: the first failure dead-letters");
    assert_eq!(sub.dead_letters(10).await.unwrap().len(), 1);
    bus.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_invalid_override_is_reported_with_the_subscription() {
    let s = Settings::from_toml("[subscriptions.signups.email]\nmin_backoff = \"20m\"").unwrap();
    let bus = tidings::from_settings(s).await.unwrap();
    let e = bus
        .subscribe(&SIGNUPS, "email", SubscriptionConfig::default(), |_m: Message<Signup>| async { Ok(()) })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"email\"") && e.to_string().contains("min_backoff must be <= max_backoff"), "{e}");
}

#[tokio::test]
async fn testing_bus_records_what_the_code_published_per_test() {
    let bus = tidings::testing::bus();
    SIGNUPS.publish(&bus, &Signup { id: 1 }).await.unwrap();
    SIGNUPS.publish(&bus, &Signup { id: 2 }).await.unwrap();
    assert_eq!(bus.published(&SIGNUPS), vec![Signup { id: 1 }, Signup { id: 2 }]);
    let other = tidings::testing::bus();
    assert!(other.published(&SIGNUPS).is_empty(), "each test bus is isolated");
}

/// Default retry policy (10 s, 20 s backoffs) under tokio's paused clock: the handler is driven to completion
/// without waiting 30 real seconds.
#[tokio::test(start_paused = true)]
async fn backoff_is_testable_without_real_waiting() {
    let bus = tidings::testing::bus();
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = attempts.clone();
    let sub = bus
        .subscribe(&SIGNUPS, "analytics", SubscriptionConfig::default(), move |m: Message<Signup>| {
            a.lock().unwrap().push((m.attempt(), tokio::time::Instant::now()));
            let attempt = m.attempt();
            async move {
                if attempt < 3 {
                    Err(HandlerError::retry("warehouse down"))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    SIGNUPS.publish(&bus, &Signup { id: 9 }).await.unwrap();
    assert!(sub.wait_idle(Duration::from_secs(3600)).await.unwrap());
    let got = attempts.lock().unwrap().clone();
    assert_eq!(got.iter().map(|(a, _)| *a).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(got[1].1 - got[0].1 >= Duration::from_secs(10), "virtual 10 s default backoff honoured");
    assert!(got[2].1 - got[1].1 >= Duration::from_secs(20), "virtual 20 s second backoff honoured");
    bus.shutdown(Duration::from_secs(1)).await;
}
