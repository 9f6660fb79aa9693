//! The router embedded in an application with its own Prometheus recorder (`Metrics::Render`): the page's figures
//! come from inside the process: handlers in flight now, the acked rate and the mean handler time.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Message, SubscriptionConfig, Topic, TopicConfig};
use tidings_dashboard::{Dashboard, Metrics};
use tokio::sync::Semaphore;
use tower::ServiceExt;

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u32,
}

static JOBS: Topic<Job> = Topic::new("jobs", TopicConfig::at_least_once());

async fn overview(app: &axum::Router) -> serde_json::Value {
    let res = app
        .clone()
        .oneshot(Request::get("/api/overview").header("host", "localhost").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).expect("overview JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_page_shows_in_process_handlers_and_their_latency() {
    // The application installs its recorder before its bus is used, as README says.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");

    let bus = Bus::new(Arc::new(tidings_local::LocalBackend::new()));
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    bus.subscribe(&JOBS, "worker", SubscriptionConfig::default(), move |_m: Message<Job>| {
        let g = g.clone();
        async move {
            g.acquire().await.expect("gate").forget();
            Ok(())
        }
    })
    .await
    .unwrap();
    let app = Dashboard::new(bus.clone()).metrics(Some(Metrics::Render(Arc::new(move || handle.render())))).router();
    for n in 0..3 {
        JOBS.publish(&bus, &Job { n }).await.unwrap();
    }
    // Three handlers wait at the gate: the page shows them in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        let o = overview(&app).await;
        if o["figures"]["subscriptions"]["jobs/worker"]["in_flight"].as_f64() == Some(3.0) {
            break o;
        }
        assert!(tokio::time::Instant::now() < deadline, "three handlers in flight never shown: {o}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first["figures"]["in_process"], true, "{first}");
    gate.add_permits(3);
    // Rates need a second sample at least a second later; by then the handlers are done.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let later = loop {
        let o = overview(&app).await;
        let s = &o["figures"]["subscriptions"]["jobs/worker"];
        if s["in_flight"].as_f64() == Some(0.0) && s["acked"].as_f64().is_some_and(|r| r > 0.0) {
            break o;
        }
        assert!(tokio::time::Instant::now() < deadline, "acked rate and an idle worker never shown: {o}");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    };
    let s = &later["figures"]["subscriptions"]["jobs/worker"];
    assert!(s["handler_mean_secs"].as_f64().is_some_and(|m| m > 0.0), "mean handler time from the recorder: {s}");
    bus.shutdown(Duration::from_secs(5)).await;
}
