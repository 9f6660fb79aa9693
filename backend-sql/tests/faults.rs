//! Network faults between tidings and PostgreSQL, injected by core's TCP proxy (the shared
//! [`network_faults`](tidings_testkit::conformance::network_faults) scenario: resets mid-stream, a 3 s cut, latency).

mod support;

use std::sync::Arc;
use std::time::Duration;

use tidings_core::Bus;
use tidings_sql::{PostgresConfig, SqlBackend};
use tidings_testkit::conformance::{network_faults, proxy::FaultProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_resets_cuts_and_latency_lose_nothing() {
    support::require_pg().await;
    let url = support::pg_url();
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let proxy = FaultProxy::start(format!("{}:{}", opts.get_host(), opts.get_port())).await;
    let db = opts.get_database().unwrap_or("test").to_string();
    let through_proxy = format!("postgres://{}@{}/{db}", opts.get_username(), proxy.addr);
    let mut config = PostgresConfig::at(through_proxy, support::pg_schema());
    config.poll_interval = Duration::from_millis(500);
    let bus = Bus::new(Arc::new(SqlBackend::postgres(config).await.unwrap()));
    let report = network_faults(&bus, &proxy, "postgres", 300, Duration::from_secs(5), Duration::from_secs(90)).await;
    assert!(report.missing.is_empty(), "lost after the network returned: {:?}", report.missing);
    bus.shutdown(Duration::from_secs(5)).await;
}
