//! `tidings cost` run as an operator runs it: on a snapshot file of the application's metrics, and over a live
//! window of its scrape endpoint (served here by a thread answering each scrape with counters that grew).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn tidings(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tidings")).args(args).env_remove("TIDINGS_BACKEND").output().expect("tidings runs")
}

const SNAPSHOT: &str = r#"# TYPE tidings_api_calls_total counter
tidings_api_calls_total{backend="aws",operation="sns:PublishBatch",topic="orders"} 100
tidings_api_bytes_total{backend="aws",operation="sns:PublishBatch",topic="orders"} 1000000
tidings_api_calls_total{backend="aws",operation="sqs:ReceiveMessage",topic="orders",subscription="billing"} 3600
tidings_api_calls_total{backend="aws",operation="sqs:DeleteMessageBatch",topic="orders",subscription="billing"} 100
"#;

/// One hour of counters: orders 100 publishes = 72 000 a month at $0.50/M = $0.036; billing 3700 requests = 2 664 000
/// a month at $0.40/M = $1.0656.
#[test]
fn cost_of_a_snapshot_file_per_topic_and_subscription() {
    let file = std::env::temp_dir().join(format!("tidings-cost-{}.prom", std::process::id()));
    std::fs::write(&file, SNAPSHOT).unwrap();
    let path = file.to_str().unwrap();
    let out = tidings(&["cost", "--metrics", path, "--over", "1h", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["window_secs"], 3600.0);
    let line = |sub: Option<&str>| {
        v["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["topic"] == "orders" && l["subscription"].as_str() == sub)
            .cloned()
            .unwrap()
    };
    assert!((line(None)["usd_per_month"].as_f64().unwrap() - 0.036).abs() < 1e-12);
    assert_eq!(line(None)["service"], "SNS");
    assert!((line(Some("billing"))["usd_per_month"].as_f64().unwrap() - 1.0656).abs() < 1e-12);
    assert!(v["prices"][0]["source"].as_str().unwrap().contains("aws.amazon.com/sns/pricing"));

    let text = tidings(&["cost", "--metrics", path, "--over", "1h"]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("orders  billing") && text.contains("$1.07") && text.contains("total $1.10"), "{text}");
    assert!(text.contains("price SQS: $0.40 per million requests"), "{text}");

    let bad = tidings(&["cost", "--metrics", path, "--over", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--over \"soon\""));
    let missing = tidings(&["cost", "--metrics", "/nonexistent/metrics.prom", "--over", "1h"]);
    assert_eq!(missing.status.code(), Some(1));
    let _ = std::fs::remove_file(&file);
}

/// A live window: each scrape shows 10 more ReceiveMessage calls than the one before, so the window holds exactly
/// 10 calls whatever its length; the estimate scales them to a month by the measured window.
#[test]
fn cost_over_a_live_window_prices_the_difference_between_two_scrapes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let scrapes = Arc::new(AtomicU64::new(0));
    let served = scrapes.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut s = stream.unwrap();
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let n = served.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!(
                "tidings_api_calls_total{{backend=\"aws\",operation=\"sqs:ReceiveMessage\",topic=\"orders\",subscription=\"billing\"}} {}\n",
                n * 10
            );
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let url = format!("http://{addr}/metrics");
    let out = tidings(&["cost", "--metrics", &url, "--window", "2s", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(scrapes.load(Ordering::SeqCst), 2);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secs = v["window_secs"].as_f64().unwrap();
    assert!(secs >= 2.0, "{secs}");
    let line = &v["lines"][0];
    let month = 30.0 * 24.0 * 3600.0;
    let want_calls = 10.0 * month / secs;
    assert!((line["calls_per_month"].as_f64().unwrap() - want_calls).abs() < 1e-6 * want_calls, "{line}");
    assert!((line["usd_per_month"].as_f64().unwrap() - want_calls * 0.40 / 1e6).abs() < 1e-9, "{line}");
}
