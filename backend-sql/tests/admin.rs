//! The operator SPI on both dialects (what `tidings ls` and `tidings dlq ...` use): the shared operator story.

mod support;

use std::sync::Arc;

use tidings_core::{Bus, Settings};
use tidings_testkit::conformance::operator_story;

async fn story(backend: &str) {
    let b = match backend {
        "postgres" => support::pg_backend().await,
        _ => support::sqlite_backend().await,
    };
    let prefix = format!("adm{}-", support::unique().replace('_', "-"));
    let settings = Settings::from_toml(&format!("name_prefix = {prefix:?}")).unwrap();
    let bus = Bus::builder(Arc::new(b)).settings(settings).build();
    operator_story(&bus, "orders").await;
    bus.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_operator_sees_and_moves_dead_letters() {
    story("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_operator_sees_and_moves_dead_letters() {
    story("postgres").await;
}
