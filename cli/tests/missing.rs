//! `tidings ls` and `tidings doctor` after an operator deleted part of a subscription's resources by hand: `ls` lists
//! what exists (the healthy subscriptions with their figures), marks what is missing naming the resource, and exits 0;
//! `doctor` names what a deleted subscription left behind instead of counting it as an application topic.

#[path = "support/app.rs"]
mod app;
mod support;

use serde_json::Value;
use support::{subscriptions, Env};

/// The child-process entry of `Env::app`. Run alone it does nothing.
#[test]
fn app_process() {
    if let Ok(mode) = std::env::var("CLI_TEST_APP_MODE") {
        app::main(&mode);
    }
}

/// The `ls --json` entry of orders/`name`.
fn entry(ls: &Value, name: &str) -> Value {
    ls["topics"].as_array().unwrap().iter().find(|t| t["name"] == "orders").unwrap()["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("orders/{name} in {ls}"))
        .clone()
}

/// Runs `ls --json` until `done` holds (a deletion shows after a while), for at most two minutes; each run must exit 0.
fn ls_until(env: &Env, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let out = env.run(&["--json", "ls"]);
        assert_eq!(out.status.code(), Some(0), "ls lists what exists and exits 0");
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
        if done(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < give_up, "gave up waiting for {what}; last output: {v}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The `doctor --json` checks (exit code 6: an orphan is a failed check).
fn doctor_checks(env: &Env) -> Vec<Value> {
    let out = env.run(&["--json", "doctor"]);
    assert_eq!(out.status.code(), Some(6), "a left-behind resource fails doctor");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["checks"].as_array().unwrap().clone()
}

fn sqs(rt: &tokio::runtime::Runtime) -> aws_sdk_sqs::Client {
    rt.block_on(async {
        let creds = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "localstack");
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .credentials_provider(creds)
            .endpoint_url("http://127.0.0.1:4566")
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        aws_sdk_sqs::Client::new(&config)
    })
}

fn delete_queue(rt: &tokio::runtime::Runtime, sqs: &aws_sdk_sqs::Client, name: &str) {
    rt.block_on(async {
        let url = sqs.get_queue_url().queue_name(name).send().await.unwrap().queue_url.unwrap();
        sqs.delete_queue().queue_url(url).send().await.unwrap();
    });
}

/// AWS: shipping's dead-letter queue and audit's queue deleted by hand. `ls` still lists billing with its figures,
/// marks shipping missing naming its dead-letter queue, and reports audit's dead-letter queue as left behind;
/// `doctor` fails on that orphan, naming it.
#[test]
fn aws_ls_marks_a_deleted_dead_letter_queue_and_lists_the_rest() {
    let env = support::aws();
    let p = env.prefix().to_string();
    assert!(env.app("declare:billing,shipping,audit").contains("declared"));
    let ls = env.json(&["ls"]);
    for s in ["orders/audit", "orders/billing", "orders/shipping"] {
        assert!(subscriptions(&ls).contains(&s.to_string()), "{ls}");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sqs = sqs(&rt);
    delete_queue(&rt, &sqs, &format!("{p}orders--shipping-dlq"));
    delete_queue(&rt, &sqs, &format!("{p}orders--audit"));

    let v = ls_until(&env, "shipping marked missing", |v| entry(v, "shipping")["missing"].is_string());
    let shipping = entry(&v, "shipping");
    let missing = shipping["missing"].as_str().unwrap();
    assert!(missing.contains(&format!("{p}orders--shipping-dlq")) && missing.contains("does not exist"), "{shipping}");
    assert!(shipping["stats"]["backlog"].is_null(), "no figures for a broken subscription: {shipping}");
    let billing = entry(&v, "billing");
    assert!(billing["missing"].is_null(), "{billing}");
    assert_eq!((billing["stats"]["backlog"].as_u64(), billing["stats"]["dead_letters"].as_u64()), (Some(0), Some(0)));
    let orphans = v["orphans"].as_array().unwrap();
    assert!(
        orphans.iter().any(|o| o["kind"] == "dead-letter queue"
            && o["resource"] == format!("{p}orders--audit-dlq")
            && o["subscription"] == format!("{p}orders--audit")),
        "{v}"
    );

    let text = env.run(&["ls"]);
    assert_eq!(text.status.code(), Some(0));
    let text = String::from_utf8_lossy(&text.stdout);
    let row = text.lines().find(|l| l.contains("shipping") && !l.starts_with("MISSING ")).unwrap();
    assert!(row.contains("MISSING"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("MISSING orders/shipping: ") && l.contains("-dlq")), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("orphaned: dead-letter queue ") && l.contains("orders--audit")),
        "{text}"
    );

    let checks = doctor_checks(&env);
    let orphan = checks.iter().find(|c| c["name"] == format!("orphaned dead-letter queue {p}orders--audit-dlq"));
    let orphan = orphan.unwrap_or_else(|| panic!("{checks:?}"));
    assert_eq!(orphan["status"], "fail");
    assert!(orphan["detail"].as_str().unwrap().contains("no longer exists"), "{orphan}");
}

/// Deletes a Pub/Sub resource through the emulator's REST API.
fn gcp_delete(env: &Env, what: &str, name: &str) {
    let host = &env.vars.iter().find(|(k, _)| k == "PUBSUB_EMULATOR_HOST").unwrap().1;
    let project = &env.vars.iter().find(|(k, _)| k == "PUBSUB_PROJECT_ID").unwrap().1;
    let (status, body) = support::http(host, "DELETE", &format!("/v1/projects/{project}/{what}/{name}"), None);
    assert_eq!(status, 200, "deleting {what}/{name}: {body}");
}

/// GCP: shipping's subscription deleted (its dead-letter topic and subscription stay) and audit's dead-letter
/// subscription deleted. `ls` lists billing, marks audit missing, and does not list shipping's dead-letter topic as an
/// application topic; `doctor` counts one topic and names both left-behind resources.
#[test]
fn gcp_ls_lists_the_rest_and_doctor_names_the_orphaned_dead_letter_topic() {
    let env = support::gcp();
    let p = env.prefix().to_string();
    assert!(env.app("declare:billing,shipping,audit").contains("declared"));
    gcp_delete(&env, "subscriptions", &format!("{p}orders--shipping"));
    gcp_delete(&env, "subscriptions", &format!("{p}orders--audit-dlq"));

    let v = ls_until(&env, "audit marked missing", |v| entry(v, "audit")["missing"].is_string());
    let names: Vec<&str> = v["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders"], "the orphaned dead-letter topic is no application topic: {v}");
    assert_eq!(subscriptions(&v), ["orders/audit", "orders/billing"]);
    let audit = entry(&v, "audit");
    assert!(audit["missing"].as_str().unwrap().contains(&format!("{p}orders--audit-dlq")), "{audit}");
    let billing = entry(&v, "billing");
    assert!(billing["missing"].is_null() && billing["stats"]["dead_letters"] == 0, "{billing}");
    let orphans: Vec<(String, String)> = v["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["kind"].as_str().unwrap().to_string(), o["resource"].as_str().unwrap().to_string()))
        .collect();
    let dlq = format!("{p}orders--shipping-dlq");
    assert_eq!(
        orphans,
        [("dead-letter subscription".to_string(), dlq.clone()), ("dead-letter topic".to_string(), dlq.clone())]
    );

    let checks = doctor_checks(&env);
    let find = |name: &str| checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name}: {checks:?}"));
    let reach = find("reachability and credentials");
    assert!(reach["detail"].as_str().unwrap().starts_with("listed 2 subscription(s) of 1 topic(s)"), "{reach}");
    for kind in ["dead-letter topic", "dead-letter subscription"] {
        let c = find(&format!("orphaned {kind} {dlq}"));
        assert_eq!(c["status"], "fail");
        assert!(c["detail"].as_str().unwrap().contains(&format!("subscription {p}orders--shipping, which")), "{c}");
    }
}
