//! Connecting the tests to the NATS server with JetStream on 127.0.0.1:4222 (`scripts/test` starts one when none
//! answers).
#![allow(dead_code)]

use std::time::Duration;

use tidings_nats::{NatsBackend, NatsConfig};
use tidings_testkit::conformance::Timing;

pub fn url() -> String {
    std::env::var("TIDINGS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Panics with instructions when no server answers.
pub fn require_server() {
    let hostport = url().trim_start_matches("nats://").to_string();
    if std::net::TcpStream::connect_timeout(&hostport.parse().expect("host:port"), Duration::from_secs(2)).is_err() {
        panic!(
            "no NATS server at {}: the NATS tests need one with JetStream (CI={}). Start it with `nats-server -js -a \
             127.0.0.1 -p 4222` (Debian package nats-server; scripts/test starts one)",
            url(),
            std::env::var("CI").unwrap_or_default()
        );
    }
}

pub fn config() -> NatsConfig {
    let mut c = NatsConfig::default();
    c.url = Some(url());
    c.wait_time = Duration::from_secs(1);
    c
}

pub async fn backend(config: NatsConfig) -> NatsBackend {
    require_server();
    NatsBackend::new(config).await.expect("connect to NATS")
}

/// JetStream timers are exact to the millisecond; these leave room for a loaded machine.
pub const TIMING: Timing = Timing {
    ack_deadline: Duration::from_secs(1),
    min_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_millis(500),
    patience: Duration::from_secs(20),
};

pub fn unique(base: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{base}-{}", &id[id.len() - 10..])
}

/// [`config`] with another provisioning mode.
pub fn provisioned(mode: tidings_nats::Provisioning) -> NatsConfig {
    let mut c = config();
    c.provisioning = mode;
    c
}
