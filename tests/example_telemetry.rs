//! The signup example with feature `opentelemetry`, run as a process on the local bus: its Prometheus endpoint
//! answers a real HTTP GET with the story's counters, it prints the dead-lettered signup's trace, and with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set it sends its spans to an OTLP/HTTP collector (a listener of this test's).
//!
//! `cargo test` builds the examples before it runs tests; run alone, build it first:
//! `cargo build --example signup --features opentelemetry`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `target/<profile>/examples/signup`, beside this test's `deps/` directory.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join("signup");
    assert!(path.exists(), "{} is missing: cargo build --example signup --features opentelemetry", path.display());
    path
}

/// Starts the example on a fresh local bus; its stdout lines arrive on the channel.
fn start(envs: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(example())
        .env("TIDINGS_BACKEND", "local")
        .env("SIGNUP_METRICS_ADDR", "127.0.0.1:0")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Lines until one contains `until` (the example's story takes about 6 s; 120 s allows for a loaded machine).
fn read_until(rx: &mpsc::Receiver<String>, until: &str, seen: &mut Vec<String>) {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no line with {until:?} ({e}); output so far:\n{}", seen.join("\n")));
        let done = line.contains(until);
        seen.push(line);
        if done {
            return;
        }
    }
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample of `name` whose labels include every pair of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        let pairs: BTreeMap<&str, &str> = rest
            .trim_end_matches('}')
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        (n == name && labels.iter().all(|(k, v)| pairs.get(k) == Some(v))).then(|| value.parse().unwrap())
    })
}

#[test]
fn the_example_serves_its_counters_to_prometheus_and_prints_the_trace() {
    let (mut child, rx) = start(&[("SIGNUP_LINGER", "120")]);
    let mut seen = Vec::new();
    read_until(&rx, "serving http://", &mut seen);
    let out = seen.join("\n");
    let addr = out.split("serving http://").nth(1).unwrap().split('/').next().unwrap().to_string();
    let text = get(&addr, "/metrics");
    child.kill().unwrap();
    child.wait().unwrap();

    let local = [("backend", "local"), ("topic", "signups")];
    let sub = |s: &'static str| [("backend", "local"), ("topic", "signups"), ("subscription", s)];
    assert_eq!(
        sample(&text, "messaging_client_sent_messages_total", &[local[0], local[1], ("outcome", "ok")]),
        Some(3.0)
    );
    assert_eq!(sample(&text, "tidings_messages_acked_total", &sub("email")), Some(3.0), "{text}");
    assert_eq!(sample(&text, "tidings_messages_acked_total", &sub("analytics")), Some(2.0));
    // Users 1 and 2 fail twice; user 3 fails on attempts 1-3 (retried) and the 4th dead-letters it.
    assert_eq!(sample(&text, "tidings_messages_retried_total", &sub("analytics")), Some(7.0));
    let dead = [sub("analytics")[0], sub("analytics")[1], sub("analytics")[2], ("reason", "handler_error")];
    assert_eq!(sample(&text, "tidings_messages_dead_lettered_total", &dead), Some(1.0));
    assert_eq!(sample(&text, "messaging_client_consumed_messages_total", &sub("analytics")), Some(10.0));
    let handled = [sub("email")[0], sub("email")[1], sub("email")[2], ("outcome", "ack")];
    assert_eq!(sample(&text, "messaging_process_duration_seconds_count", &handled), Some(3.0), "{text}");
    // The first-day emails, scheduled 5 s after each signup through the same outbox.
    let first_day = [("backend", "local"), ("topic", "first-day"), ("subscription", "email")];
    assert_eq!(sample(&text, "tidings_messages_acked_total", &first_day), Some(3.0), "{text}");
    assert!(sample(&text, "tidings_outbox_relay_lag_seconds_count", &[]).is_some_and(|n| n >= 6.0), "{text}");

    // The trace of user 3's signup: the request span, then the email attempt and analytics attempts 1-4 beneath it,
    // and the first-day email 5 s later.
    let trace: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("trace ")).collect();
    assert!(trace.first().is_some_and(|l| l.contains("the signup of user 3")), "{out}");
    let process = |name: &str| trace.iter().filter(|l| l.contains(&format!(" {name} ("))).count();
    assert!(trace[1].contains(" signup ("), "{out}");
    assert_eq!((process("process email"), process("process analytics")), (2, 4), "{out}");
    for topic in ["signups", "first-day"] {
        assert!(trace.iter().any(|l| l.contains(&format!("send {topic} [outbox relay, trace "))), "{out}");
        let email = format!("topic={topic} subscription=email attempt=1");
        assert!(trace.iter().any(|l| l.contains("process email") && l.contains(&email)), "{out}");
    }
    for attempt in 1..=4 {
        assert!(
            trace.iter().any(|l| l.contains("process analytics") && l.contains(&format!("attempt={attempt}"))),
            "attempt {attempt}: {out}"
        );
    }
    assert_eq!(trace.iter().filter(|l| l.contains("settle=nack")).count(), 3, "{out}");
    assert_eq!(trace.iter().filter(|l| l.contains("settle=dead_letter")).count(), 1, "{out}");
}

#[test]
fn with_an_otlp_endpoint_the_spans_go_to_the_collector() {
    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let (tx, requests) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in collector.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = Vec::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push(line.trim_end().to_string());
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            // Handed on before the answer, so the exporter's flush (and the example) ends after the test has it.
            if tx.send((head, body)).is_err() {
                break;
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let (mut child, rx) = start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let mut seen = Vec::new();
    read_until(&rx, "spans exported to the OTLP endpoint", &mut seen);
    assert!(child.wait().unwrap().success());
    let mut names = String::new();
    while let Ok((head, body)) = requests.recv_timeout(Duration::from_secs(1)) {
        assert!(head[0].starts_with("POST /v1/traces "), "{head:?}");
        assert!(head.iter().any(|h| h.eq_ignore_ascii_case("content-type: application/x-protobuf")), "{head:?}");
        // Protobuf keeps strings as UTF-8 bytes: the span names are readable in the body.
        names.push_str(&String::from_utf8_lossy(&body));
    }
    for name in ["signup", "send signups", "send first-day", "process email", "process analytics", "signup-example"] {
        assert!(names.contains(name), "{name} not exported: {}", seen.join("\n"));
    }
}
