//! The operator SPI on JetStream (what `tidings ls` and `tidings dlq ...` use): the shared operator story.

mod support;

use std::sync::Arc;

use tidings_core::{Bus, Settings};
use tidings_testkit::conformance::operator_story;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sees_and_moves_dead_letters() {
    let b = support::backend(support::config()).await;
    let prefix = format!("{}-", support::unique("adm"));
    let settings = Settings::from_toml(&format!("name_prefix = {prefix:?}")).unwrap();
    let bus = Bus::builder(Arc::new(b)).settings(settings).build();
    operator_story(&bus, "orders").await;
    bus.shutdown(std::time::Duration::from_secs(5)).await;
}
