//! The `tidings` binary against LocalStack, the Pub/Sub emulator, SQLite, PostgreSQL and NATS: ls, dlq ls/show/redrive/purge, publish and
//! tail, as an operator runs them beside an application process.

#[path = "support/app.rs"]
mod app;
mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use support::{dead_letters, subscriptions, Env};

/// The child-process entry of `Env::app`: the application side of the story. Run alone it does nothing.
#[test]
fn app_process() {
    if let Ok(mode) = std::env::var("CLI_TEST_APP_MODE") {
        app::main(&mode);
    }
}

fn reasons(v: &serde_json::Value) -> Vec<String> {
    let mut r: Vec<String> = dead_letters(v).iter().map(|d| d["reason"].as_str().unwrap().to_string()).collect();
    r.sort();
    r
}

/// The operator's story: see the dead letters, group them, look at one, redrive one group (dry run first), purge the
/// other (refused without confirmation), and the application handles what was redriven.
///
/// `full = false` (Pub/Sub) skips the read-only variations (grep, limit, since, show), which are the CLI's own logic
/// and run on AWS: every read on Pub/Sub is a streaming pull, and the emulator serves a burst of short-lived pulls
/// less and less (a pull then sees part of the dead letters for up to a minute).
fn dead_letter_story(env: &Env, full: bool) {
    assert!(env.app("seed").contains("seeded"));
    let dlq = ["dlq", "ls", "orders", "billing"];
    let v = env.until(&dlq, "5 dead letters", |v| dead_letters(v).len() == 5);
    assert_eq!(
        reasons(&v),
        [
            "unrecoverable: card declined",
            "unrecoverable: card declined",
            "unrecoverable: card declined",
            "unrecoverable: invalid total in order 4",
            "unrecoverable: invalid total in order 5"
        ]
    );

    let ls = env.json(&["ls"]);
    assert!(subscriptions(&ls).contains(&"orders/billing".to_string()), "{ls}");
    let text = env.ok(&["ls"]);
    assert!(text.contains("orders") && text.contains("billing"), "{text}");

    if !full {
        return gcp_tail_of_the_story(env, &dlq);
    }
    let groups = env.until(&["dlq", "ls", "orders", "billing", "--group-by", "reason"], "3 groups", |g| {
        g.as_array().is_some_and(|a| a.len() == 3) && g[0]["count"] == 3
    });
    assert_eq!(groups[0]["reason"], "unrecoverable: card declined");
    let grep =
        env.until(&["dlq", "ls", "orders", "billing", "--grep", "\"n\":5"], "order 5", |v| dead_letters(v).len() == 1);
    env.until(&["dlq", "ls", "orders", "billing", "--limit", "2"], "2 rows", |v| dead_letters(v).len() == 2);
    env.until(&["dlq", "ls", "orders", "billing", "--since", "1h"], "5 recent", |v| dead_letters(v).len() == 5);

    let one = dead_letters(&grep)[0].clone();
    let id = one["id"].as_str().unwrap();
    let shown =
        env.until_output(&["--json", "dlq", "show", "orders", "billing", id], "order 5", |o| o.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["dead_letter"]["payload"], serde_json::json!({"n": 5, "kind": "invalid"}));
    assert_eq!(shown["dead_letter"]["reason"], "unrecoverable: invalid total in order 5");
    let text = env.until_output(&["dlq", "show", id], "order 5 found", |o| o.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("\"kind\": \"invalid\"") && text.contains("orders / billing"), "{text}");
    let missing = env.run(&["dlq", "show", "orders", "billing", "no-such-id"]);
    assert_eq!(missing.status.code(), Some(4));

    let redrive = ["dlq", "redrive", "orders", "billing", "--reason", "card declined$"];
    let dry = env.until(&[&redrive[..], &["--dry-run"]].concat(), "3 selected", |d| d["selected"] == 3);
    assert_eq!(dry["done"], 0, "{dry}");
    env.until(&dlq, "5 dead letters after a dry run", |v| dead_letters(v).len() == 5);

    let moved = env.act_until(&[&redrive[..], &["--rate", "20/s"]].concat(), 3);
    assert_eq!(moved, 3);
    let v = env.until(&dlq, "the invalid totals", |v| dead_letters(v).len() == 2);
    assert_eq!(reasons(&v), ["unrecoverable: invalid total in order 4", "unrecoverable: invalid total in order 5"]);

    let refused =
        env.until_output(&["dlq", "purge", "orders", "billing", "--all"], "a refusal", |o| o.status.code() != Some(0));
    assert_eq!(refused.status.code(), Some(5), "no confirmation without a terminal");
    env.until(&dlq, "2 dead letters after a refusal", |v| dead_letters(v).len() == 2);
    let purge = ["dlq", "purge", "orders", "billing", "--reason", "invalid", "--yes"];
    assert_eq!(env.act_until(&purge, 2), 2);

    let handled = env.app("handle:3");
    assert!(handled.contains("handled 1,2,3"), "the redriven orders are handled: {handled}");
}

/// Redrive one reason group, purge the other, and the application handles what was redriven.
fn gcp_tail_of_the_story(env: &Env, dlq: &[&str]) {
    let redrive = ["dlq", "redrive", "orders", "billing", "--reason", "card declined$"];
    assert_eq!(env.act_until(&redrive, 3), 3);
    let v = env.until(dlq, "the invalid totals", |v| dead_letters(v).len() == 2);
    assert_eq!(reasons(&v), ["unrecoverable: invalid total in order 4", "unrecoverable: invalid total in order 5"]);
    let purge = ["dlq", "purge", "orders", "billing", "--reason", "invalid", "--yes"];
    assert_eq!(env.act_until(&purge, 2), 2);
    env.until(dlq, "an empty dead-letter queue", |v| dead_letters(v).is_empty());
    let handled = env.app("handle:3");
    assert!(handled.contains("handled 1,2,3"), "the redriven orders are handled: {handled}");
}

/// The `tailing ...` line of a tail's stderr (log lines, such as a backend's warnings, may come first).
fn tailing(err: &mut impl BufRead) -> String {
    let mut line = String::new();
    while !line.starts_with("tailing ") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "the tail ended without saying what it tails");
    }
    line
}

/// `publish` and `tail`: the tail's temporary subscription sees what is published and is removed on exit, after
/// `--count` and after Ctrl-C alike.
fn publish_and_tail(env: &Env) {
    env.app("seed"); // declares the topic and its subscription
    let mut tail = env
        .command(&["--json", "tail", "orders", "--count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(tail.stderr.take().unwrap());
    let line = tailing(&mut err);
    assert!(line.starts_with("tailing orders through temporary subscription tail-"), "{line}");
    let temp = line.split_whitespace().nth(5).unwrap().to_string();
    assert!(subscriptions(&env.json(&["ls"])).contains(&format!("orders/{temp}")));

    let p = env.json(&[
        "publish",
        "orders",
        "--data",
        r#"{"n": 7, "kind": "ok"}"#,
        "--attr",
        "source=cli",
        "--id",
        "order-7",
    ]);
    assert_eq!(p["id"], "order-7");
    let file = std::env::temp_dir().join(format!("{}order.json", env.prefix()));
    std::fs::write(&file, r#"{"n": 8, "kind": "ok"}"#).unwrap();
    env.ok(&["publish", "orders", "--data", &format!("@{}", file.display())]);
    let bad = env.run(&["publish", "orders", "--data", "{not json"]);
    assert_eq!(bad.status.code(), Some(2));
    // Delayed delivery: a delay or time that does not parse is refused before anything is sent, naming the value.
    for (flag, value) in [("--delay", "soon"), ("--delay", "-5m"), ("--at", "tomorrow at nine")] {
        let arg = format!("{flag}={value}");
        let bad = env.run(&["publish", "orders", "--data", r#"{"n": 9, "kind": "ok"}"#, &arg]);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(&format!("{flag} {value:?}")), "{err}");
    }

    let out = tail.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(out.status.success(), "tail failed: {}{rest}", String::from_utf8_lossy(&out.stdout));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut ns: Vec<u64> = lines.iter().map(|l| l["payload"]["n"].as_u64().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, [7, 8]);
    let seven = lines.iter().find(|l| l["payload"]["n"] == 7).unwrap();
    assert_eq!((seven["id"].as_str(), seven["attributes"]["source"].as_str()), (Some("order-7"), Some("cli")));
    assert!(!subscriptions(&env.json(&["ls"])).contains(&format!("orders/{temp}")), "removed after --count");

    // Interrupted: Ctrl-C (SIGINT) removes the temporary subscription too.
    let mut tail = env.command(&["tail", "orders"]).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut err = BufReader::new(tail.stderr.take().unwrap());
    let line = tailing(&mut err);
    let temp = line.split_whitespace().nth(5).unwrap().to_string();
    assert!(subscriptions(&env.json(&["ls"])).contains(&format!("orders/{temp}")));
    let status = Command::new("kill").args(["-INT", &tail.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(tail.wait().unwrap().success());
    assert!(!subscriptions(&env.json(&["ls"])).contains(&format!("orders/{temp}")), "removed after Ctrl-C");
}

use std::process::Command;

/// A redrive interrupted half-way (SIGINT at 1 message a second) says how far it got, and every message is in the
/// dead-letter queue or back in the subscription.
fn interrupted_redrive_loses_nothing(env: &Env) {
    assert!(env.app("seed").contains("seeded"));
    let dlq = ["dlq", "ls", "orders", "billing"];
    env.until(&dlq, "5 dead letters", |v| dead_letters(v).len() == 5);
    let child = env
        .command(&["dlq", "redrive", "orders", "billing", "--all", "--rate", "1/s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stats = || {
        let ls = env.json(&["ls"]);
        let s = ls["topics"].as_array().unwrap().iter().find(|t| t["name"] == "orders").unwrap()["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "billing")
            .unwrap()["stats"]
            .clone();
        (s["backlog"].as_u64().unwrap(), s["dead_letters"].as_u64().unwrap())
    };
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // Wait for the dead-letter queue to shrink (not for the backlog to grow: the seeding process may have exited
    // with an `ok` order's ack still unsent, which leaves the backlog above 0 before anything is redriven).
    while stats().1 == 5 {
        assert!(std::time::Instant::now() < give_up, "the redrive moved nothing");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    let moved: u64 = err
        .split("interrupted: moved ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!((1..5).contains(&moved), "interrupted half-way: {err}");
    let (backlog, dead) = stats();
    assert!(backlog + dead >= 5, "nothing lost: {backlog} in the subscription, {dead} dead letters");
    assert_eq!(dead, 5 - moved, "what was not moved is still in the dead-letter queue");
}

/// `doctor`: reachable, credentials accepted, the declared topic and subscription present; a declared subscription
/// that does not exist and (where the backend keeps settings) a drifted ack deadline fail with the resource, the
/// setting and both values; permissions pass, fail or are skipped with the reason; exit code 6 when a check failed.
fn doctor(env: &Env, permissions: &[(&str, &str)], drift: Option<&str>) {
    let out = env.app("topology");
    let json = out.lines().find_map(|l| l.strip_prefix("TOPOLOGY ")).unwrap_or_else(|| panic!("no topology in {out}"));
    let mut topology: serde_json::Value = serde_json::from_str(json).unwrap();
    let path = std::env::temp_dir().join(format!("{}topology.json", env.prefix()));
    std::fs::write(&path, topology.to_string()).unwrap();
    let file = path.display().to_string();

    let v = env.json(&["doctor", "--topology", &file]);
    let checks = v["checks"].as_array().unwrap();
    let status = |prefix: &str| -> Vec<(String, String)> {
        checks
            .iter()
            .filter(|c| c["name"].as_str().unwrap().starts_with(prefix))
            .map(|c| (c["status"].as_str().unwrap().to_string(), c["detail"].as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(v["failed"], 0, "{v}");
    for name in
        ["configuration", "reachability and credentials", "topology ", "topic orders", "subscription orders/billing"]
    {
        assert_eq!(status(name).first().map(|s| s.0.as_str()), Some("pass"), "{name}: {v}");
    }
    for (name, want) in permissions {
        let got = status(name);
        assert!(!got.is_empty() && got.iter().all(|(s, _)| s == want), "{name}: {want} expected: {v}");
    }
    let text = env.ok(&["doctor", "--topology", &file]);
    assert!(text.contains("pass  subscription orders/billing"), "{text}");

    // A subscription that was never provisioned, and a drifted setting.
    let subs = topology["topics"][0]["subscriptions"].as_array_mut().unwrap();
    let mut missing = subs[0].clone();
    missing["name"] = "shipping".into();
    missing["resource"] = format!("{}orders--shipping", env.prefix()).into();
    subs.push(missing);
    if drift.is_some() {
        subs[0]["ack_deadline"] = "45s".into();
    }
    std::fs::write(&path, topology.to_string()).unwrap();
    let out = env.run(&["--json", "doctor", "--topology", &file]);
    assert_eq!(out.status.code(), Some(6), "a failed check exits 6");
    // The failure points to the backend's page in the manual (tidings' tests/book.rs checks the page exists).
    let page = tidings::book::url(tidings::book::backend_page(env.backend()).unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&page), "doctor's failure names {page}: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = v["checks"].as_array().unwrap();
    let find = |name: &str| checks.iter().find(|c| c["name"].as_str().unwrap().starts_with(name)).unwrap().clone();
    let shipping = find("subscription orders/shipping");
    assert_eq!(shipping["status"], "fail");
    assert!(shipping["detail"].as_str().unwrap().starts_with("missing: "), "{shipping}");
    let billing = find("subscription orders/billing");
    match drift {
        Some(setting) => {
            let d = billing["detail"].as_str().unwrap();
            assert!(billing["status"] == "fail" && d.starts_with("drift: ") && d.contains(setting), "{billing}");
        }
        None => assert_eq!(billing["status"], "pass", "{billing}"),
    }

    let plain = env.json(&["doctor"]);
    assert_eq!(plain["failed"], 0, "{plain}");
    assert!(plain["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "resources and drift" && c["status"] == "skipped"));
}

#[test]
fn sqlite_doctor() {
    doctor(&support::sqlite(), &[("permissions", "skipped")], None);
}

#[test]
fn postgres_doctor() {
    doctor(&support::postgres(), &[("permissions", "pass")], None);
}

#[test]
fn nats_doctor() {
    doctor(
        &support::nats(),
        &[("permissions: JetStream", "pass"), ("permissions: subjects", "skipped")],
        Some("ack_wait"),
    );
}

#[test]
fn aws_doctor() {
    doctor(&support::aws(), &[("permissions", "skipped")], Some("VisibilityTimeout"));
}

#[test]
fn gcp_doctor() {
    doctor(
        &support::gcp(),
        &[("permissions: dead-letter topic", "skipped"), ("permissions: subscription", "skipped")],
        Some("ack_deadline"),
    );
}

/// `doctor` on AWS with the application's own IAM user (LocalStack runs IAM and STS): the policy simulator passes the
/// actions tidings needs on the topology's topics and queues, and once the user's policy lacks one, the check fails
/// naming the action and the queue. With the account's root user (the other AWS tests) it is skipped with the reason.
#[test]
fn aws_doctor_simulates_the_application_policy() {
    let env = support::aws();
    let out = env.app("topology");
    let json = out.lines().find_map(|l| l.strip_prefix("TOPOLOGY ")).unwrap_or_else(|| panic!("no topology in {out}"));
    let path = std::env::temp_dir().join(format!("{}topology.json", env.prefix()));
    std::fs::write(&path, json).unwrap();
    let file = path.display().to_string();

    let prefix = env.prefix().to_string();
    let sqs_actions = [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:CreateQueue",
        "sqs:GetQueueUrl",
        "sqs:SetQueueAttributes",
    ];
    // Least privilege: the topology's own topics, queues and dead-letter queues, by ARN.
    let topology: serde_json::Value = serde_json::from_str(json).unwrap();
    let (mut topics, mut queues) = (Vec::new(), Vec::new());
    for t in topology["topics"].as_array().unwrap() {
        topics.push(format!("arn:aws:sns:us-east-1:000000000000:{}", t["resource"].as_str().unwrap()));
        for s in t["subscriptions"].as_array().unwrap() {
            let q = s["resource"].as_str().unwrap();
            queues.push(format!("arn:aws:sqs:us-east-1:000000000000:{q}"));
            queues.push(format!("arn:aws:sqs:us-east-1:000000000000:{q}-dlq"));
        }
    }
    let policy = |sqs: &[&str]| {
        serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["sns:Publish", "sns:CreateTopic", "sns:Subscribe"], "Resource": topics},
            {"Effect": "Allow", "Action": sqs, "Resource": queues}
        ]})
        .to_string()
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let user = format!("{prefix}app");
    let iam = rt.block_on(async {
        let root = aws_sdk_iam::config::Credentials::new("test", "test", None, None, "localstack");
        let mut config = aws_config::defaults(aws_config::BehaviorVersion::latest()).credentials_provider(root);
        for (k, v) in &env.vars {
            config = match k.as_str() {
                "AWS_ENDPOINT_URL" => config.endpoint_url(v),
                "AWS_REGION" => config.region(aws_config::Region::new(v.clone())),
                _ => config,
            };
        }
        aws_sdk_iam::Client::new(&config.load().await)
    });
    let put = |doc: String| {
        rt.block_on(iam.put_user_policy().user_name(&user).policy_name("app").policy_document(doc).send()).unwrap();
    };
    rt.block_on(iam.create_user().user_name(&user).send()).unwrap();
    put(policy(&sqs_actions));
    let key = rt.block_on(iam.create_access_key().user_name(&user).send()).unwrap().access_key.unwrap();
    let mut app = Env { vars: env.vars.clone() };
    app.vars.retain(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY");
    app.vars.push(("AWS_ACCESS_KEY_ID".into(), key.access_key_id));
    app.vars.push(("AWS_SECRET_ACCESS_KEY".into(), key.secret_access_key));

    let check = |v: &serde_json::Value, name: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {v}"))
            .clone()
    };
    let v = app.json(&["doctor", "--topology", &file]);
    for name in ["permissions: SNS topics", "permissions: SQS queues"] {
        let c = check(&v, name);
        assert_eq!(c["status"], "pass", "{c}");
        assert!(
            c["detail"].as_str().unwrap().starts_with(&format!("arn:aws:iam::000000000000:user/{user} may ")),
            "{c}"
        );
    }

    put(policy(&sqs_actions.iter().copied().filter(|a| *a != "sqs:DeleteMessage").collect::<Vec<_>>()));
    let out = app.run(&["--json", "doctor", "--topology", &file]);
    assert_eq!(out.status.code(), Some(6), "a failed check exits 6");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check(&v, "permissions: SNS topics")["status"], "pass");
    let sqs = check(&v, "permissions: SQS queues");
    let detail = sqs["detail"].as_str().unwrap();
    assert_eq!(sqs["status"], "fail", "{sqs}");
    let queue = format!("sqs:DeleteMessage on arn:aws:sqs:us-east-1:000000000000:{prefix}orders--billing (");
    assert!(detail.contains(&queue) && !detail.contains("sqs:ReceiveMessage"), "{sqs}");

    let root = env.json(&["doctor", "--topology", &file]);
    let skipped = check(&root, "permissions");
    assert_eq!(skipped["status"], "skipped");
    assert!(skipped["detail"].as_str().unwrap().contains("root user"), "{skipped}");
}

/// An unreachable server is a failed check, and nothing after it is attempted.
#[test]
fn doctor_reports_an_unreachable_server() {
    let mut env = support::nats();
    env.vars.retain(|(k, _)| k != "TIDINGS_NATS__URL");
    env.vars.push(("TIDINGS_NATS__URL".into(), "nats://127.0.0.1:1".into()));
    let out = env.run(&["--json", "doctor"]);
    assert_eq!(out.status.code(), Some(6));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let connection = v["checks"].as_array().unwrap().iter().find(|c| c["name"] == "connection").unwrap().clone();
    assert_eq!(connection["status"], "fail");
    assert!(connection["detail"].as_str().unwrap().contains("127.0.0.1:1"), "{connection}");
}

#[test]
fn aws_interrupted_redrive_loses_nothing() {
    interrupted_redrive_loses_nothing(&support::aws());
}

#[test]
fn aws_dead_letter_story() {
    dead_letter_story(&support::aws(), true);
}

#[test]
fn gcp_dead_letter_story() {
    dead_letter_story(&support::gcp(), false);
}

#[test]
fn aws_publish_and_tail() {
    publish_and_tail(&support::aws());
}

#[test]
fn gcp_publish_and_tail() {
    publish_and_tail(&support::gcp());
}

#[test]
fn sqlite_dead_letter_story() {
    dead_letter_story(&support::sqlite(), true);
}

#[test]
fn sqlite_publish_and_tail() {
    publish_and_tail(&support::sqlite());
}

#[test]
fn sqlite_interrupted_redrive_loses_nothing() {
    interrupted_redrive_loses_nothing(&support::sqlite());
}

#[test]
fn postgres_dead_letter_story() {
    dead_letter_story(&support::postgres(), true);
}

#[test]
fn postgres_publish_and_tail() {
    publish_and_tail(&support::postgres());
}

#[test]
fn postgres_interrupted_redrive_loses_nothing() {
    interrupted_redrive_loses_nothing(&support::postgres());
}

#[test]
fn nats_dead_letter_story() {
    dead_letter_story(&support::nats(), true);
}

#[test]
fn nats_publish_and_tail() {
    publish_and_tail(&support::nats());
}

#[test]
fn nats_interrupted_redrive_loses_nothing() {
    interrupted_redrive_loses_nothing(&support::nats());
}

/// `ls` shows the messages published with a delay apart (SCHEDULED; `--json`: `stats.scheduled`) where the backend
/// keeps delays itself (SQL), and `–` with a footnote naming the reason where the subscribing processes hold them
/// (NATS): never a number that could be wrong. No consumer runs, so everything published waits in the backlog.
fn ls_shows_scheduled_messages_apart(env: &Env, native: bool) {
    assert!(env.app("declare:billing").contains("declared billing"));
    for delay in [Some("1h"), Some("90m"), None] {
        let mut args = vec!["publish", "orders", "--data", r#"{"n": 20, "kind": "ok"}"#];
        args.extend(delay.iter().flat_map(|d| ["--delay", d]));
        env.json(&args);
    }
    let ls = env.json(&["ls"]);
    let orders = ls["topics"].as_array().unwrap().iter().find(|t| t["name"] == "orders").expect("orders listed");
    let billing = orders["subscriptions"].as_array().unwrap().iter().find(|s| s["name"] == "billing").unwrap();
    let stats = &billing["stats"];
    assert_eq!(stats["backlog"], 3, "{ls}");
    let footnote = ls["unknown"].as_array().unwrap().iter().find(|u| u["field"] == "scheduled").cloned();
    if native {
        assert_eq!(stats["scheduled"], 2, "{ls}");
        assert!(footnote.is_none(), "{ls}");
    } else {
        assert!(stats["scheduled"].is_null(), "unknown, not 0: {ls}");
        assert!(footnote.unwrap()["reason"].as_str().unwrap().contains("held by the subscribing processes"), "{ls}");
    }
    let text = env.ok(&["ls"]);
    let mut lines = text.lines().skip(1);
    let head: Vec<&str> = lines.next().unwrap().split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(
        head,
        ["TOPIC", "DELIVERY", "SUBSCRIPTION", "BACKLOG", "SCHEDULED", "IN FLIGHT", "OLDEST UNACKED", "DLQ"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..5], ["orders", "–", "billing", "3", if native { "2" } else { "–" }], "{text}");
    assert_eq!(
        text.contains("\n– scheduled: delayed messages are held by the subscribing processes"),
        !native,
        "{text}"
    );
}

#[test]
fn sqlite_ls_shows_scheduled_messages_apart() {
    ls_shows_scheduled_messages_apart(&support::sqlite(), true);
}

#[test]
fn postgres_ls_shows_scheduled_messages_apart() {
    ls_shows_scheduled_messages_apart(&support::postgres(), true);
}

#[test]
fn nats_ls_shows_scheduled_messages_apart() {
    ls_shows_scheduled_messages_apart(&support::nats(), false);
}

/// `publish --delay` and `publish --at` are accepted at once and the message is held until its due time: a tail
/// started before the publishes prints the two due in seconds no earlier than due (for `--delay`, measured from
/// before the publishing process started), each as its first attempt, and never the one due in an hour, which is
/// still in the declared subscription's backlog at the end (and, where the backend can tell, still scheduled).
fn publish_with_a_delay_or_a_time_is_held_until_due(env: &Env, native: bool) {
    use std::time::{Duration, SystemTime};
    assert!(env.app("declare:billing").contains("declared billing"));
    let mut tail = env
        .command(&["--json", "tail", "orders", "--count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(tail.stderr.take().unwrap());
    tailing(&mut err);
    // Each line the tail prints, with the time the test read it (after the tail's handler ran).
    let (lines, printed) = std::sync::mpsc::channel();
    let stdout = BufReader::new(tail.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send((line, SystemTime::now())).is_err() {
                break;
            }
        }
    });

    let publish = |n: u64, flag: &str, value: &str| {
        let data = format!(r#"{{"n": {n}, "kind": "ok"}}"#);
        env.json(&["publish", "orders", "--data", &data, flag, value])["id"].as_str().unwrap().to_string()
    };
    let before = SystemTime::now();
    let delayed = publish(30, "--delay", "4s");
    let at = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(5)).to_string();
    let timed = publish(31, "--at", &at);
    publish(32, "--delay", "1h");
    let due = [(delayed, before + Duration::from_secs(4)), (timed, humantime::parse_rfc3339(&at).unwrap())];

    for _ in 0..2 {
        let (line, read_at) = printed.recv_timeout(Duration::from_secs(60)).expect("the tail printed both");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let (id, due) = due
            .iter()
            .find(|(id, _)| v["id"] == id.as_str())
            .unwrap_or_else(|| panic!("only the messages due in seconds are delivered: {v}"));
        assert!(read_at >= *due, "{id} printed {:?} before its due time", due.duration_since(read_at).unwrap());
        assert_eq!(v["attempt"], 1, "its first attempt: {v}");
    }
    let out = tail.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert!(out.status.success(), "tail failed: {rest}");

    let ls = env.json(&["ls"]);
    let orders = ls["topics"].as_array().unwrap().iter().find(|t| t["name"] == "orders").expect("orders listed");
    let billing = orders["subscriptions"].as_array().unwrap().iter().find(|s| s["name"] == "billing").unwrap();
    // NATS: the tail's runtime held the two due in seconds and requeued a copy of each into the stream, addressed to
    // its own consumer; billing, which runs no consumer here to skip them, counts those copies in its backlog too.
    assert_eq!(billing["stats"]["backlog"], if native { 3 } else { 3 + 2 }, "{ls}");
    let scheduled = if native { serde_json::json!(1) } else { serde_json::Value::Null };
    assert_eq!(billing["stats"]["scheduled"], scheduled, "the one due in an hour: {ls}");
}

#[test]
fn sqlite_publish_with_a_delay_or_a_time_is_held_until_due() {
    publish_with_a_delay_or_a_time_is_held_until_due(&support::sqlite(), true);
}

#[test]
fn nats_publish_with_a_delay_or_a_time_is_held_until_due() {
    publish_with_a_delay_or_a_time_is_held_until_due(&support::nats(), false);
}

/// Completion scripts for bash, zsh and fish name the commands; they need no backend.
#[test]
fn completions_for_bash_zsh_and_fish() {
    let env = Env { vars: vec![("TIDINGS_BACKEND".into(), "local".into())] };
    for (shell, marker) in [("bash", "_tidings()"), ("zsh", "#compdef tidings"), ("fish", "complete -c tidings")] {
        let out = env.ok(&["completions", shell]);
        assert!(out.contains(marker) && out.contains("redrive") && out.contains("doctor"), "{shell}: {out}");
    }
    assert_eq!(env.run(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn the_in_memory_bus_is_refused_with_the_reason_and_what_to_use_instead() {
    let env = Env { vars: vec![("TIDINGS_BACKEND".into(), "local".into())] };
    let out = env.run(&["ls"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in-memory bus")
            && err.contains("TIDINGS_BACKEND=aws, gcp, nats, sqlite or postgres")
            && err.contains("dashboard::router"),
        "{err}"
    );
    let out = env.run(&["--backend", "nats-typo", "ls"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nats-typo"));
}

#[test]
fn help_names_the_exit_codes_and_the_manual() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings")).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Exit codes: 0 done"), "{text}");
    assert!(text.contains(&tidings::book::url(tidings::book::CLI)), "--help names the manual's CLI page: {text}");
}
