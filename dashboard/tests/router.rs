//! The dashboard router embedded in an application on the in-memory bus: the page and its assets are served from
//! the binary, the overview and the dead-letter groups come from the running subscriptions, actions need the switch,
//! a token is enforced, and each action is logged with who and what.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tidings_core::{Bus, HandlerError, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};
use tidings_dashboard::Dashboard;
use tower::ServiceExt;

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    n: u32,
}

static JOBS: Topic<Job> = Topic::new("jobs", TopicConfig::at_least_once());

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The embedded router answers `localhost` (and IP addresses) in `Host`, as a browser on loopback names it.
fn get(path: &str) -> Request<Body> {
    Request::get(path).header("host", "localhost:7878").body(Body::empty()).unwrap()
}

fn post(path: &str, json: &str) -> Request<Body> {
    Request::post(path)
        .header("host", "localhost:7878")
        .header("content-type", "application/json")
        .header("user-agent", "curl/8.5.0")
        .body(Body::from(json.to_string()))
        .unwrap()
}

/// A bus whose `jobs/worker` subscription dead-letters every job the first time, and handles it once redriven.
async fn bus_with_dead_letters() -> (Bus, tidings_core::Subscription) {
    let bus = Bus::new(Arc::new(tidings_local::LocalBackend::new()));
    let failed = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let sub = bus
        .subscribe(&JOBS, "worker", SubscriptionConfig::default().with_max_retries(0), move |m: Message<Job>| {
            let failed = failed.clone();
            async move {
                if failed.lock().unwrap().insert(m.n) {
                    Err(HandlerError::unrecoverable(if m.n < 3 { "printer on fire" } else { "out of paper" }))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    for n in 0..4 {
        JOBS.publish(&bus, &Job { n }).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sub.dead_letters(10).await.unwrap().len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "jobs were not dead-lettered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (bus, sub)
}

#[tokio::test]
async fn serves_the_embedded_page_and_the_in_memory_bus_read_only_by_default() {
    let (bus, _sub) = bus_with_dead_letters().await;
    let app = tidings_dashboard::router(bus);
    let (status, page) = call(&app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<title>tidings dashboard</title>") && page.contains("assets/app.js"));
    let (status, js) = call(&app, get("/assets/app.js")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(js.contains("/api/overview"));
    let (_, overview) = call(&app, get("/api/overview")).await;
    let v: serde_json::Value = serde_json::from_str(&overview).unwrap();
    assert_eq!(v["backend"], "local");
    assert_eq!(v["actions"], false);
    // The page links to the manual: its own page and the backend's (tidings' tests/book.rs checks both exist).
    assert_eq!(v["manual"]["dashboard"], tidings_core::book::url(tidings_core::book::DASHBOARD));
    assert_eq!(v["manual"]["backend"], tidings_core::book::url("backends/in-memory.html"));
    assert!(page.contains(r#"id="manual""#) && js.contains("o.manual.backend"));
    let sub = &v["topics"][0]["subscriptions"][0];
    assert_eq!((sub["name"].as_str(), sub["stats"]["dead_letters"].as_u64()), (Some("worker"), Some(4)));
    let (_, groups) = call(&app, get("/api/dlq/jobs/worker")).await;
    let g: serde_json::Value = serde_json::from_str(&groups).unwrap();
    assert_eq!(g["total"], 4);
    assert_eq!(g["groups"][0]["reason"], "unrecoverable: printer on fire");
    assert_eq!(g["groups"][0]["count"], 3);
    let (status, body) = call(&app, post("/api/dlq/jobs/worker/redrive", r#"{"reason":"x","confirmed":true}"#)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("--allow-actions"));
}

#[tokio::test]
async fn a_redrive_or_purge_per_group_needs_confirmation_moves_the_group_and_is_logged() {
    let (bus, sub) = bus_with_dead_letters().await;
    let app = Dashboard::new(bus).allow_actions(true).router();
    let path = "/api/dlq/jobs/worker/redrive";
    let reason = "unrecoverable: printer on fire";
    let (_, groups) = call(&app, get("/api/dlq/jobs/worker")).await;
    let g: serde_json::Value = serde_json::from_str(&groups).unwrap();
    let id = g["groups"][0]["examples"][0][0].as_str().unwrap().to_string();
    let (status, _) = call(&app, post(path, &format!(r#"{{"reason":"{reason}","confirmed":false}}"#))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(&app, post(path, &format!(r#"{{"reason":"{reason}","confirmed":true}}"#))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["done"], 3);
    assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
    let (_, groups) = call(&app, get("/api/dlq/jobs/worker")).await;
    let g: serde_json::Value = serde_json::from_str(&groups).unwrap();
    assert_eq!(
        (g["total"].as_u64(), g["groups"][0]["reason"].as_str()),
        (Some(1), Some("unrecoverable: out of paper"))
    );
    let (status, body) =
        call(&app, post("/api/dlq/jobs/worker/purge", r#"{"reason":"unrecoverable: out of paper","confirmed":true}"#))
            .await;
    assert_eq!(status, StatusCode::OK, "the in-memory bus purges through the one dead-letter surface: {body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["done"], 1);
    let (_, groups) = call(&app, get("/api/dlq/jobs/worker")).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&groups).unwrap()["total"].as_u64(), Some(0));
    let (_, log) = call(&app, get("/api/log")).await;
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    assert_eq!(log[1]["action"], "redrive");
    assert_eq!(log[1]["outcome"], "3 message(s)");
    // Who: the peer (none through `oneshot`) and the client's short name; the full user agent beside.
    assert_eq!(log[1]["who"], "unknown peer (curl 8.5)", "{log}");
    assert_eq!((log[1]["client"].as_str(), log[1]["user_agent"].as_str()), (Some("curl 8.5"), Some("curl/8.5.0")));
    // The redriven message left the queue, yet its timeline keeps every step, in order.
    let (status, t) = call(&app, get(&format!("/api/message/{id}"))).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let t: serde_json::Value = serde_json::from_str(&t).unwrap();
    let steps: Vec<&str> = t["events"].as_array().unwrap().iter().map(|e| e["what"].as_str().unwrap()).collect();
    assert_eq!(steps, ["published", "attempts", "dead-lettered", "redriven"], "{t}");
    assert_eq!(t["events"][2]["detail"], reason);
    assert!(t["events"][3]["detail"].as_str().unwrap().contains("3 message(s) moved"), "{t}");
    assert_eq!(log[0]["action"], "purge");
}

#[tokio::test]
async fn a_token_is_required_on_every_api_call_and_appears_on_no_page() {
    let (bus, _sub) = bus_with_dead_letters().await;
    let app = Dashboard::new(bus).token(Some("s3cret".into())).router();
    assert_eq!(call(&app, get("/api/overview")).await.0, StatusCode::UNAUTHORIZED);
    let mut authed = get("/api/overview");
    authed.headers_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
    assert_eq!(call(&app, authed).await.0, StatusCode::OK);
    let mut wrong = get("/api/log");
    wrong.headers_mut().insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(call(&app, wrong).await.0, StatusCode::UNAUTHORIZED);
    let (status, page) = call(&app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("s3cret"));
}

/// The overview shows a subscription's scheduled messages (published with a due time not reached yet) apart from its
/// backlog, and the page has the column: two jobs due in an hour wait while an undelayed one is handled.
#[tokio::test]
async fn the_overview_shows_scheduled_messages_apart_from_the_backlog() {
    let bus = Bus::new(Arc::new(tidings_local::LocalBackend::new()));
    let handler = |_m: Message<Job>| async { Ok(()) };
    let sub = bus.subscribe(&JOBS, "later", SubscriptionConfig::default(), handler).await.unwrap();
    let in_an_hour = PublishOptions::new().deliver_after(Duration::from_secs(3600));
    for n in 0..2 {
        JOBS.publish_with(&bus, &Job { n }, in_an_hour.clone()).await.unwrap();
    }
    JOBS.publish(&bus, &Job { n: 2 }).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sub.backlog().await.unwrap() != Some(2) {
        assert!(tokio::time::Instant::now() < deadline, "the undelayed job was not handled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let app = tidings_dashboard::router(bus.clone());
    let (status, overview) = call(&app, get("/api/overview")).await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    let v: serde_json::Value = serde_json::from_str(&overview).unwrap();
    let stats = &v["topics"][0]["subscriptions"][0]["stats"];
    assert_eq!((stats["backlog"].as_u64(), stats["scheduled"].as_u64()), (Some(2), Some(2)), "{overview}");
    let (_, page) = call(&app, get("/")).await;
    let (_, js) = call(&app, get("/assets/app.js")).await;
    assert!(page.contains(">Scheduled</th>") && js.contains("fmt(s.stats.scheduled)"), "the page has the column");
    bus.shutdown(Duration::from_secs(5)).await;
}
