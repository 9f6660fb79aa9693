//! `tidings cost`: the estimated monthly bill per topic and subscription from the application's `tidings.api.calls`
//! and `tidings.api.bytes` counters, at the list prices of `tidings::dashboard::cost::prices` (the dashboard shows
//! the same estimate). Reads no backend: only the application's metrics.

use std::time::Duration;

use clap::{ArgGroup, Args};
use tidings::dashboard::cost::{self, Estimate, Scrape, Usage};

use crate::exit::{Failure, Outcome, BACKEND, USAGE};
use crate::table::{self, UNKNOWN};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("span").required(true).args(["over", "window"])))]
pub struct CostArgs {
    /// The application's metrics: a Prometheus text scrape URL (http://host:port/metrics) or a file holding one.
    #[arg(long, value_name = "URL|FILE")]
    pub metrics: String,
    /// A snapshot: how long its counters counted (the application's uptime, or since they were reset), such as 6h.
    #[arg(long, value_name = "DURATION")]
    pub over: Option<String>,
    /// A live measurement: reads the metrics, waits this long, reads them again and prices the difference.
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
}

fn duration(flag: &str, v: &str) -> Result<Duration, Failure> {
    let d = humantime::parse_duration(v)
        .map_err(|e| Failure::new(USAGE, format!("{flag} {v:?} is not a duration such as 30s or 6h: {e}")))?;
    if d.is_zero() {
        return Err(Failure::new(USAGE, format!("{flag} {v:?} must be longer than zero")));
    }
    Ok(d)
}

async fn read(source: &str) -> Result<Scrape, Failure> {
    Scrape::read(source).await.map_err(|e| {
        let code = if matches!(e, cost::ScrapeError::Syntax { .. }) { USAGE } else { BACKEND };
        Failure::new(code, e.to_string())
    })
}

pub async fn run(a: CostArgs, json: bool) -> Outcome {
    let (usage, how) = match (&a.over, &a.window) {
        (Some(over), _) => {
            let d = duration("--over", over)?;
            (Usage::from_snapshot(&read(&a.metrics).await?, d), format!("snapshot {} covering {over}", a.metrics))
        }
        (None, Some(window)) => {
            let d = duration("--window", window)?;
            let first = read(&a.metrics).await?;
            if !json {
                eprintln!("measuring {} for {window} ...", a.metrics);
            }
            tokio::time::sleep(d).await;
            let second = read(&a.metrics).await?;
            (Usage::between(&first, &second), format!("{} measured live for {window}", a.metrics))
        }
        (None, None) => unreachable!("clap requires --over or --window"),
    };
    let e = cost::estimate(&usage, &tidings::backends());
    if json {
        table::json(&e);
        return Ok(());
    }
    print(&e, &how);
    Ok(())
}

fn money(usd: Option<f64>) -> String {
    usd.map_or_else(|| UNKNOWN.to_string(), |d| format!("${d:.2}"))
}

fn amount(n: f64, unit: &str) -> String {
    match unit {
        "byte" if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        "byte" if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        "byte" => format!("{n:.0} B"),
        _ => format!("{n:.0}"),
    }
}

fn print(e: &Estimate, how: &str) {
    println!("estimated monthly bill from {how} (30-day month, list prices)");
    if e.lines.is_empty() {
        println!("no tidings.api.calls counters in these metrics (is the application's metrics recorder installed?)");
        return;
    }
    let rows: Vec<Vec<String>> = e
        .lines
        .iter()
        .map(|l| {
            vec![
                l.topic.clone().unwrap_or_else(|| "(no topic)".into()),
                l.subscription.clone().unwrap_or_else(|| UNKNOWN.into()),
                l.service.map_or_else(|| format!("{} (no per-call price)", l.backend), str::to_string),
                format!("{:.0}", l.calls_per_month),
                l.service
                    .map_or_else(|| UNKNOWN.into(), |_| format!("{} {}s", amount(l.billed_per_month, l.unit), l.unit)),
                money(l.usd_per_month),
            ]
        })
        .collect();
    table::print(&["TOPIC", "SUBSCRIPTION", "SERVICE", "CALLS/MONTH", "BILLED/MONTH", "USD/MONTH"], &rows);
    println!("total {}", money(Some(e.usd_per_month)));
    for p in &e.prices {
        println!("price {}: {} (source {}, {})", p.service, p.rule, p.source, p.date);
    }
    for n in &e.notes {
        println!("note: {n}");
    }
}
