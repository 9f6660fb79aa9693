//! What the binary prints besides its tables: the dashboard's action log on stderr (RUST_LOG), stdout kept clean for
//! `--json` whatever is logged, a failed redrive's error alone, `--yes` refused on redrive with the reason, and a
//! cloud SDK's debug dump behind `--verbose`.

#[path = "support/app.rs"]
mod app;
mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::dead_letters;

/// The child-process entry of `Env::app`. Run alone it does nothing.
#[test]
fn app_process() {
    if let Ok(mode) = std::env::var("CLI_TEST_APP_MODE") {
        app::main(&mode);
    }
}

/// The next stderr line for which `want` holds, within a minute; panics with what came meanwhile.
fn line_with(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if want(&l) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("no stderr line with {what} within a minute; stderr so far:\n{}", seen.join("\n")),
        }
    }
}

/// Five dead letters of orders/billing on a SQLite bus, and `RUST_LOG=info tidings dashboard --allow-actions` on it
/// with its stderr piped.
fn seeded_dashboard(env: &support::Env) -> std::process::Child {
    assert!(env.app("seed").contains("seeded"));
    env.until(&["dlq", "ls", "orders", "billing"], "5 dead letters", |v| dead_letters(v).len() == 5);
    env.command(&["dashboard", "--allow-actions", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `RUST_LOG=info tidings dashboard --allow-actions`: a purge and a redrive made through the dashboard's API each
/// print their log line (target `tidings::dashboard`) on stderr.
#[test]
fn sqlite_dashboard_actions_are_logged_on_stderr() {
    let env = support::sqlite();
    let mut dash = seeded_dashboard(&env);
    let (tx, lines) = mpsc::channel();
    let err = BufReader::new(dash.stderr.take().unwrap());
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let serving = line_with(&lines, &mut seen, "the dashboard's address", |l| l.starts_with("dashboard of the sqlite"));
    let addr = serving.split("http://").nth(1).and_then(|r| r.split('/').next()).unwrap().to_string();

    let act = |action: &str, reason: &str| {
        let body = serde_json::json!({ "reason": reason, "confirmed": true }).to_string();
        let (status, answer) = support::http(&addr, "POST", &format!("/api/dlq/orders/billing/{action}"), Some(&body));
        assert_eq!(status, 200, "{action}: {answer}");
    };
    act("purge", "unrecoverable: card declined");
    let purge = line_with(&lines, &mut seen, "the purge's log line", |l| l.contains("tidings::dashboard"));
    assert!(purge.contains("INFO") && purge.contains("purge") && purge.contains("orders/billing"), "{purge}");
    assert!(purge.contains("3 message(s)"), "{purge}");
    act("redrive", "unrecoverable: invalid total in order 4");
    let redrive = line_with(&lines, &mut seen, "the redrive's log line", |l| l.contains("tidings::dashboard"));
    assert!(redrive.contains("redrive") && redrive.contains("1 message(s)"), "{redrive}");

    let stopped = std::process::Command::new("kill").args(["-INT", &dash.id().to_string()]).status().unwrap();
    assert!(stopped.success());
    assert!(dash.wait().unwrap().success());
}

/// A dashboard whose stderr was closed (`tidings dashboard 2>&1 | head -1`) keeps answering: a request that logs (an
/// action, a refused host) is answered, not broken by a failed log write.
#[test]
fn sqlite_dashboard_keeps_answering_after_its_stderr_is_closed() {
    let env = support::sqlite();
    let mut dash = seeded_dashboard(&env);
    let mut err = BufReader::new(dash.stderr.take().unwrap());
    let mut serving = String::new();
    while !serving.starts_with("dashboard of the sqlite") {
        serving.clear();
        assert!(err.read_line(&mut serving).unwrap() > 0, "the dashboard ended before printing its address");
    }
    drop(err); // the reading end of its stderr closes
    let addr = serving.split("http://").nth(1).and_then(|r| r.split('/').next()).unwrap().trim().to_string();
    let body = serde_json::json!({ "reason": "unrecoverable: card declined", "confirmed": true }).to_string();
    let (status, answer) = support::http(&addr, "POST", "/api/dlq/orders/billing/purge", Some(&body));
    assert_eq!(status, 200, "purge: {answer}");
    let (status, _) = support::http(&addr, "GET", "/api/overview", None);
    assert_eq!(status, 200);
    assert!(dash.try_wait().unwrap().is_none(), "the dashboard is still running");
    let stopped = std::process::Command::new("kill").args(["-INT", &dash.id().to_string()]).status().unwrap();
    assert!(stopped.success());
    let _ = dash.wait();
}

/// With every log level on, `--json` stdout is the JSON alone: the logs go to stderr.
#[test]
fn sqlite_json_stdout_stays_json_with_logs_on() {
    let env = support::sqlite();
    env.app("declare:billing");
    let out = env.command(&["--json", "ls"]).env("RUST_LOG", "trace").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON alone");
    assert_eq!(support::subscriptions(&v), ["orders/billing"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tidings bus ready"), "the logs are on stderr: {err}");
}

/// A redrive of a subscription that does not exist prints its error and nothing else (no "moved 0 dead letters").
#[test]
fn sqlite_redrive_of_a_missing_subscription_prints_only_the_error() {
    let env = support::sqlite();
    env.app("declare:billing");
    for json in [false, true] {
        let args = ["dlq", "redrive", "orders", "nosuch", "--all"];
        let out = env.run(&[&["--json"][..usize::from(json)], &args[..]].concat());
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "nothing on stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no subscription \"nosuch\" of topic \"orders\"") && !err.contains("moved"), "{err}");
    }
}

/// `--yes` belongs to purge: a redrive refuses it with the reason (exit 2) and moves nothing; purge still takes it.
#[test]
fn sqlite_redrive_refuses_yes_with_the_reason() {
    let env = support::sqlite();
    assert!(env.app("seed").contains("seeded"));
    let out = env.run(&["dlq", "redrive", "orders", "billing", "--all", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--yes is not an option of `dlq redrive`") && err.contains("confirms a purge"), "{err}");
    assert_eq!(dead_letters(&env.json(&["dlq", "ls", "orders", "billing"])).len(), 5, "nothing moved");
    assert_eq!(env.json(&["dlq", "purge", "orders", "billing", "--all", "--yes"])["done"], 5);
}

/// A doctor check failing on an AWS SDK error shows the error's sentence; the SDK's debug dump comes with --verbose.
#[test]
fn aws_doctor_failure_keeps_the_sentence_and_puts_the_sdk_dump_behind_verbose() {
    let mut env = support::aws();
    env.vars.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.vars.push(("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:1".into()));
    let check = |verbose: bool| {
        let args = if verbose { vec!["doctor", "--verbose"] } else { vec!["doctor"] };
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(6));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find(|l| l.starts_with("FAIL  reachability and credentials: ")).unwrap().to_string()
    };
    let short = check(false);
    assert!(short.contains("aws: ListTopics on ") && short.contains("Connection refused"), "{short}");
    assert!(short.ends_with("(--verbose prints the SDK's details)") && !short.contains("DispatchFailure"), "{short}");
    assert!(short.len() < 300, "{} characters: {short}", short.len());
    let long = check(true);
    assert!(long.contains("Connection refused") && long.contains("DispatchFailure("), "{long}");
}
