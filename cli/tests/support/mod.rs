//! Running the real `tidings` binary against LocalStack and the Pub/Sub emulator, and the application side of the
//! story (seeding dead letters, handling redriven messages) in child processes of this test binary, as a separate
//! application process would: the CLI never shares a process with the application.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The environment of one backend, as an operator's shell would have it.
#[derive(Clone, Debug)]
pub struct Env {
    pub vars: Vec<(String, String)>,
}

fn reachable(name: &str, hostport: &str, start: &str) {
    let addr = hostport.parse().expect("host:port");
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!(
            "{name} is not reachable at {hostport}: the CLI tests need it (CI={}). Start it with `{start}` (scripts/test \
             does this)",
            std::env::var("CI").unwrap_or_default()
        );
    }
}

fn prefix() -> String {
    format!("cli{}-", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// LocalStack, with a fresh name prefix.
pub fn aws() -> Env {
    reachable("LocalStack", "127.0.0.1:4566", "scripts/localstack start");
    let mut vars = vec![
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("TIDINGS_BACKEND", "aws"),
        ("TIDINGS_AWS__WAIT_TIME", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect::<Vec<_>>();
    vars.push(("TIDINGS_NAME_PREFIX".into(), prefix()));
    Env { vars }
}

/// The Pub/Sub emulator at `PUBSUB_EMULATOR_HOST` (default 127.0.0.1:8085; scripts/test also runs the GCP stories
/// against the stock emulator), with a fresh name prefix.
pub fn gcp() -> Env {
    let host = std::env::var("PUBSUB_EMULATOR_HOST").unwrap_or_else(|_| "127.0.0.1:8085".into());
    reachable("The Pub/Sub emulator", &host, "scripts/pubsub-emulator start");
    let vars = vec![
        ("PUBSUB_EMULATOR_HOST".to_string(), host),
        ("PUBSUB_PROJECT_ID".into(), "tidings-test".into()),
        ("TIDINGS_BACKEND".into(), "gcp".into()),
        ("TIDINGS_NAME_PREFIX".into(), prefix()),
    ];
    Env { vars }
}

/// A SQLite file of its own under the temp dir, with a fresh name prefix.
pub fn sqlite() -> Env {
    let p = prefix();
    let path = std::env::temp_dir().join(format!("tidings-{p}cli")).join("bus.db");
    let vars = vec![
        ("TIDINGS_BACKEND".to_string(), "sqlite".to_string()),
        ("TIDINGS_SQLITE__PATH".into(), path.display().to_string()),
        ("TIDINGS_NAME_PREFIX".into(), p),
    ];
    Env { vars }
}

/// The machine's PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`), schema
/// `tidings_cli_tests`, with a fresh name prefix.
pub fn postgres() -> Env {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let hostport = url.rsplit('@').next().and_then(|r| r.split('/').next()).unwrap_or("127.0.0.1:5432").to_string();
    reachable("PostgreSQL", &hostport, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start");
    let vars = vec![
        ("TIDINGS_BACKEND".to_string(), "postgres".to_string()),
        ("TIDINGS_POSTGRES__URL".into(), url),
        ("TIDINGS_POSTGRES__SCHEMA".into(), "tidings_cli_tests".into()),
        ("TIDINGS_NAME_PREFIX".into(), prefix()),
    ];
    Env { vars }
}

/// The NATS server with JetStream on 127.0.0.1:4222, with a fresh name prefix.
pub fn nats() -> Env {
    reachable("NATS", "127.0.0.1:4222", "nats-server -js -a 127.0.0.1 -p 4222 (scripts/test starts one)");
    let vars = vec![
        ("TIDINGS_BACKEND".to_string(), "nats".to_string()),
        ("TIDINGS_NATS__URL".into(), "nats://127.0.0.1:4222".into()),
        ("TIDINGS_NATS__WAIT_TIME".into(), "1s".into()),
        ("TIDINGS_NAME_PREFIX".into(), prefix()),
    ];
    Env { vars }
}

impl Env {
    /// The backend this environment names (`TIDINGS_BACKEND`).
    pub fn backend(&self) -> &str {
        self.vars.iter().find(|(k, _)| k == "TIDINGS_BACKEND").map(|(_, v)| v.as_str()).expect("TIDINGS_BACKEND set")
    }

    pub fn prefix(&self) -> &str {
        &self.vars.iter().find(|(k, _)| k == "TIDINGS_NAME_PREFIX").unwrap().1
    }

    /// A command for the `tidings` binary in this environment (nothing inherited from the test's own TIDINGS_*).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidings"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIDINGS_")) {
            c.env_remove(k);
        }
        c.envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))).args(args).stdin(Stdio::null());
        c.current_dir(std::env::temp_dir());
        c
    }

    /// Runs `tidings args...` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("tidings runs");
        eprintln!(
            "$ tidings {}\n{}{}-> {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
        );
        out
    }

    /// Runs `tidings args...`, which must succeed, and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "tidings {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `tidings --json args...` and parses its output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// Polls `tidings --json args...` until `done` holds (a cloud backend shows changes after a while), for at most
    /// three minutes; returns the last output.
    pub fn until(&self, args: &[&str], what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let give_up = Instant::now() + Duration::from_secs(180);
        loop {
            let v = self.json(args);
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < give_up, "gave up waiting for {what}; last output: {v}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs `tidings args...` until `done` holds for its output, for at most three minutes (Pub/Sub hands a pull
    /// what is not leased elsewhere, so one read may see part of a dead-letter queue).
    pub fn until_output(&self, args: &[&str], what: &str, done: impl Fn(&Output) -> bool) -> Output {
        let give_up = Instant::now() + Duration::from_secs(180);
        loop {
            let out = self.run(args);
            if done(&out) {
                return out;
            }
            assert!(Instant::now() < give_up, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Repeats an action (`--json dlq redrive|purge ...`) until the runs moved or deleted `expected` messages in all
    /// (one run on Pub/Sub may see part of the dead letters), for at most three minutes; returns the total.
    pub fn act_until(&self, action: &[&str], expected: u64) -> u64 {
        let give_up = Instant::now() + Duration::from_secs(180);
        let mut total = 0;
        loop {
            total += self.json(action)["done"].as_u64().expect("done");
            if total >= expected {
                return total;
            }
            assert!(Instant::now() < give_up, "gave up repeating {action:?}: {total} of {expected} done");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The application side (`app::main` in a child process of this test binary) with `mode`, not started.
    pub fn app_command(&self, mode: &str) -> Command {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", "app_process", "--nocapture", "--test-threads=1"]);
        c.envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))).env("CLI_TEST_APP_MODE", mode);
        c
    }

    /// Runs the application side with `mode`, waits for it to finish and returns its stdout.
    pub fn app(&self, mode: &str) -> String {
        let out = self.app_command(mode).output().expect("the application process runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "application ({mode}) failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// The dead letters of a `dlq ls --json` output.
pub fn dead_letters(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// The subscriptions (`topic/subscription`) of an `ls --json` output.
pub fn subscriptions(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for t in v["topics"].as_array().into_iter().flatten() {
        for s in t["subscriptions"].as_array().into_iter().flatten() {
            out.push(format!("{}/{}", t["name"].as_str().unwrap(), s["name"].as_str().unwrap()));
        }
    }
    out
}

/// One HTTP/1.1 request to `addr` (`host:port`), answered with its status and body: enough for the Pub/Sub
/// emulator's REST API and the dashboard's, without an HTTP client.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read until the answer is whole: its Content-Length, the last chunk, or the server closing (some servers keep
    // the connection open despite `Connection: close`).
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        let whole = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
            let head = head.to_ascii_lowercase();
            let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse());
            match length {
                Some(Ok(len)) => body.len() >= len,
                _ if head.contains("transfer-encoding: chunked") => body.ends_with("0\r\n\r\n"),
                _ => false,
            }
        });
        if n == 0 || whole {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
