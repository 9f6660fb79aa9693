//! Shared by the SQLite and PostgreSQL tests: the payload, unique names, waiting.
#![allow(dead_code)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{Topic, TopicConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub n: i64,
}

pub fn unique() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 12..].to_string()
}

/// A topic with a unique name.
pub fn topic(base: &str) -> Topic<Job> {
    Topic::new(Box::leak(format!("{base}-{}", unique()).into_boxed_str()), TopicConfig::at_least_once())
}

/// Polls `f` every 10 ms for up to `secs` seconds.
pub async fn eventually<F: std::future::Future<Output = bool>>(secs: u64, mut f: impl FnMut() -> F) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Injected panics stay out of the test output.
pub fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<&str>().copied().unwrap_or("");
            if !msg.starts_with("injected panic") {
                previous(info);
            }
        }));
    });
}

/// The subscription config of the tests: fast retries.
pub fn config(max_retries: u32) -> tidings_core::SubscriptionConfig {
    tidings_core::SubscriptionConfig::default()
        .with_ack_deadline(Duration::from_secs(2))
        .with_retry(tidings_core::RetryPolicy::new(Duration::from_millis(20), Duration::from_millis(100)))
        .with_max_retries(max_retries)
}
