//! The dashboard in a real browser (Debian's chromium driven by playwright-core, `dashboard/browser/dashboard.mjs`)
//! against LocalStack with seeded dead letters: the page shows the counts, the person redrives the reason group
//! (confirming), and sees the dead-letter queue empty and the messages handled by the application; only a non-zero
//! DLQ is bold red, the action log shows the browser and peer, and the redriven message's timeline keeps every step.
//! A request naming a forged host (`Host: evil.example`, as a DNS rebinding page's would) is refused. Saves the
//! screenshots `target/dashboard-before.png` (README's) and `target/dashboard-after.png`. On SQLite, the page shows
//! scheduled messages apart from the backlog (`dashboard/browser/scheduled.mjs`); on AWS, unknown with the reason.
//! `scripts/browser-setup` installs chromium and playwright-core (scripts/test runs it).

#[path = "support/app.rs"]
mod app;
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The child-process entry of `Env::app`. Run alone it does nothing.
#[test]
fn app_process() {
    if let Ok(mode) = std::env::var("CLI_TEST_APP_MODE") {
        app::main(&mode);
    }
}

/// The repository root and `dashboard/browser`, once Debian's chromium and playwright-core are there.
fn browser() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let browser_dir = root.join("dashboard/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists() && browser_dir.join("node_modules/playwright-core").exists(),
        "the browser test needs Debian's chromium and playwright-core (CI={}): run scripts/browser-setup (scripts/test \
         does)",
        std::env::var("CI").unwrap_or_default()
    );
    (root, browser_dir)
}

/// A running `tidings dashboard ARGS`: its URL, from the line it logs first; what it logs later is read on (a closed
/// pipe would fail its log writes) and shown when it stops.
struct Served {
    child: Child,
    url: String,
    line: String,
    logged: std::thread::JoinHandle<String>,
}

fn serve(env: &support::Env, args: &[&str]) -> Served {
    let mut child = env.command(args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    stderr.read_line(&mut line).unwrap();
    let logged = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });
    let url =
        line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("{line}")).to_string();
    Served { child, url, line, logged }
}

impl Served {
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("dashboard's stderr:\n{}{}", self.line, self.logged.join().unwrap());
    }
}

#[test]
fn a_person_redrives_a_reason_group_in_the_dashboard_and_sees_the_dead_letter_queue_empty() {
    let (root, browser_dir) = browser();
    let env = support::aws();
    assert!(env.app("seed-declined").contains("seeded"));
    env.until(&["dlq", "ls", "orders", "billing"], "3 dead letters", |v| support::dead_letters(v).len() == 3);

    // The application's metrics as its Prometheus endpoint would serve them: a consumer long-polling orders/billing
    // once a second, rewritten each half second (the dashboard rereads the file at each refresh).
    let metrics = std::env::temp_dir().join(format!("tidings-dash-metrics-{}.prom", std::process::id()));
    let scrape = |n: u64| {
        format!(
            "tidings_api_calls_total{{backend=\"aws\",operation=\"sqs:ReceiveMessage\",topic=\"orders\",subscription=\"billing\"}} {}\n\
             tidings_handlers_in_flight{{backend=\"aws\",topic=\"orders\",subscription=\"billing\"}} 0\n",
            n / 2
        )
    };
    std::fs::write(&metrics, scrape(0)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (metrics, stop) = (metrics.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(500));
                n += 1;
                let tmp = metrics.with_extension("tmp");
                std::fs::write(&tmp, scrape(n)).unwrap();
                std::fs::rename(&tmp, &metrics).unwrap();
            }
        })
    };
    let metrics_arg = metrics.to_str().unwrap();
    let listen = ["dashboard", "--listen", "127.0.0.1:0", "--allowed-host", "dash.test", "--allow-actions"];
    let dashboard = serve(&env, &[&listen[..], &["--metrics", metrics_arg]].concat());
    let url = dashboard.url.clone();
    // The DNS rebinding guard: a forged host is refused, the one allowed by --allowed-host served.
    let ask = |host: &str| {
        use std::io::{Read, Write};
        let addr = url.trim_start_matches("http://").trim_end_matches('/');
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET /api/overview HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let (forged, allowed) = (ask("evil.example"), ask("dash.test"));
    // The application runs beside the dashboard and handles what comes back.
    let handler = env.app_command("handle:3").stdout(Stdio::piped()).spawn().unwrap();

    let target = root.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let (before, after) = (target.join("dashboard-before.png"), target.join("dashboard-after.png"));
    let out = Command::new("node")
        .current_dir(&browser_dir)
        .arg("dashboard.mjs")
        .args([&url, "orders/billing", "3", "unrecoverable: card declined"])
        .args([&before, &after])
        .output()
        .expect("node runs");
    let mut handler = handler;
    if !out.status.success() {
        let _ = handler.kill();
    }
    let handled = handler.wait_with_output().unwrap();
    dashboard.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let _ = std::fs::remove_file(&metrics);
    let log = String::from_utf8_lossy(&out.stdout);
    eprintln!("{log}{}", String::from_utf8_lossy(&out.stderr));
    assert!(forged.starts_with("HTTP/1.1 403") && forged.contains("\"evil.example\""), "{forged}");
    assert!(allowed.starts_with("HTTP/1.1 200") && allowed.contains("\"backend\":\"aws\""), "{allowed}");
    assert!(out.status.success(), "the browser session failed");
    for step in [
        "topology shows orders/billing with 3",
        "scheduled is unknown here, with the reason",
        "rates are shown",
        "cost per subscription is shown: $",
        "shows published, attempts and dead-lettered",
        "the DLQ of 3 is bold red",
        "keeps published, attempts, dead-lettered and shows redriven",
        "the DLQ of 0 is neither bold nor red",
        "who shows \"Chrome ",
        "redrive confirmed",
        "dead-letter queue is empty",
        "backlog is handled",
        "action is logged",
    ] {
        assert!(log.contains(step), "missing step {step:?}");
    }
    assert!(String::from_utf8_lossy(&handled.stdout).contains("handled 1,2,3"));
    assert!(std::fs::metadata(&before).unwrap().len() > 10_000, "a screenshot was saved");
}

/// On SQLite, which keeps delays itself, the page shows a subscription's scheduled messages apart from its backlog:
/// two orders published with `--delay` and one without wait (no consumer runs), two of them scheduled.
#[test]
fn the_dashboard_shows_scheduled_messages_apart_from_the_backlog() {
    let (_, browser_dir) = browser();
    let env = support::sqlite();
    assert!(env.app("declare:billing").contains("declared billing"));
    for delay in [Some("1h"), Some("2h"), None] {
        let mut args = vec!["publish", "orders", "--data", r#"{"n": 1, "kind": "ok"}"#];
        args.extend(delay.iter().flat_map(|d| ["--delay", d]));
        env.ok(&args);
    }
    let dashboard = serve(&env, &["dashboard", "--listen", "127.0.0.1:0"]);
    let out = Command::new("node")
        .current_dir(&browser_dir)
        .args(["scheduled.mjs", &dashboard.url, "orders/billing", "3", "2"])
        .output()
        .expect("node runs");
    dashboard.stop();
    let log = String::from_utf8_lossy(&out.stdout);
    eprintln!("{log}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser session failed");
    for step in ["topology shows orders/billing with a backlog of 3", "of it, 2 scheduled, under the Scheduled header"]
    {
        assert!(log.contains(step), "missing step {step:?}");
    }
}
