//! The dashboard in a real browser (Debian's chromium driven by playwright-core, `dashboard/browser/dashboard.mjs`)
//! against LocalStack with seeded dead letters: the page shows the counts, the person redrives the reason group
//! (confirming), and sees the dead-letter queue empty and the messages handled by the application. Saves the
//! screenshots `target/dashboard-before.png` (README's) and `target/dashboard-after.png`.
//! `scripts/browser-setup` installs chromium and playwright-core (scripts/test runs it).

#[path = "support/app.rs"]
mod app;
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// The child-process entry of `Env::app`. Run alone it does nothing.
#[test]
fn app_process() {
    if let Ok(mode) = std::env::var("CLI_TEST_APP_MODE") {
        app::main(&mode);
    }
}

#[test]
fn a_person_redrives_a_reason_group_in_the_dashboard_and_sees_the_dead_letter_queue_empty() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let browser_dir = root.join("dashboard/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists() && browser_dir.join("node_modules/playwright-core").exists(),
        "the browser test needs Debian's chromium and playwright-core (CI={}): run scripts/browser-setup (scripts/test \
         does)",
        std::env::var("CI").unwrap_or_default()
    );
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
    let mut dashboard = env
        .command(&["dashboard", "--listen", "127.0.0.1:0", "--allow-actions", "--metrics", metrics.to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(dashboard.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let url =
        line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("{line}")).to_string();
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
    let _ = dashboard.kill();
    let _ = dashboard.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let _ = std::fs::remove_file(&metrics);
    let log = String::from_utf8_lossy(&out.stdout);
    eprintln!("{log}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser session failed");
    for step in [
        "topology shows orders/billing with 3",
        "rates are shown",
        "cost per subscription is shown: $",
        "shows published, attempts and dead-lettered",
        "shows redriven",
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
