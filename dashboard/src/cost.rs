//! The cost estimator the `tidings cost` command and the dashboard share: the monthly bill per topic and
//! subscription from the `tidings.api.calls` and `tidings.api.bytes` counters (labels `backend`, `operation`,
//! `topic`, `subscription`) of a metrics snapshot, at the list prices in [`prices`].
//!
//! Each backend says how its operations are billed ([`BackendInfo::pricing`]); the price of each service is in
//! [`prices`]. Counters are totals, so the estimate works on aggregates per (backend, operation, topic,
//! subscription):
//! - SNS and SQS: billed requests = max(calls, ⌈bytes / 64 KiB⌉). Exact while no single request carries more than
//!   64 KiB; a lower bound otherwise (a 100 KiB request bills two, and the aggregate cannot see which one it was).
//! - Pub/Sub: billed bytes of publishes = max(bytes, 1000 × calls) (exact while every request is at or above, or
//!   every one below, 1000 bytes; a lower bound otherwise); each subscription of the topic is billed delivery of
//!   what the topic published (the bytes its pulls carried where counted, if more); redeliveries are not counted.
//! - NATS, SQLite, PostgreSQL and the in-memory bus have no per-call price (their cost is the servers you run).
//!
//! A month is 30 days: the window's usage is scaled by 30 days / window.

pub mod prices;
pub mod scrape;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tidings_core::backend::{BackendInfo, Billed};

pub use prices::Price;
pub use scrape::{Sample, Scrape, ScrapeError};

/// Seconds in the 30-day month the estimate projects to.
pub const MONTH_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// Calls and payload bytes of one (backend, operation, topic, subscription) over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counter {
    /// `aws`, `gcp`, `nats`, ...
    pub backend: String,
    /// `sns:PublishBatch`, `pubsub:Publish`, ...
    pub operation: String,
    /// Topic the calls were for.
    pub topic: Option<String>,
    /// Subscription the calls were for.
    pub subscription: Option<String>,
    /// Calls.
    pub calls: f64,
    /// Payload bytes.
    pub bytes: f64,
}

/// API usage over a measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// Counters with any calls.
    pub counters: Vec<Counter>,
    /// How long the counters counted.
    pub window: Duration,
}

type Key = (String, String, Option<String>, Option<String>);

fn key(s: &Sample) -> Key {
    let l = |k: &str| s.labels.get(k).cloned();
    (l("backend").unwrap_or_default(), l("operation").unwrap_or_default(), l("topic"), l("subscription"))
}

fn counters(s: &Scrape) -> BTreeMap<Key, (f64, f64)> {
    let mut out: BTreeMap<Key, (f64, f64)> = BTreeMap::new();
    for c in s.series("tidings.api.calls") {
        out.entry(key(c)).or_default().0 += c.value;
    }
    for b in s.series("tidings.api.bytes") {
        out.entry(key(b)).or_default().1 += b.value;
    }
    out
}

fn usage(map: BTreeMap<Key, (f64, f64)>, window: Duration) -> Usage {
    let counters = map
        .into_iter()
        .filter(|(_, (c, b))| *c > 0.0 || *b > 0.0)
        .map(|((backend, operation, topic, subscription), (calls, bytes))| Counter {
            backend,
            operation,
            topic,
            subscription,
            calls,
            bytes,
        })
        .collect();
    Usage { counters, window }
}

impl Usage {
    /// The totals of one snapshot, which counted for `window` (the process's uptime, or since the counters were
    /// last reset).
    pub fn from_snapshot(s: &Scrape, window: Duration) -> Usage {
        usage(counters(s), window)
    }

    /// What was counted between two snapshots of the same process (a counter that went down was reset: its later
    /// value is what it counted since).
    pub fn between(earlier: &Scrape, later: &Scrape) -> Usage {
        let before = counters(earlier);
        let mut after = counters(later);
        for (k, (c, b)) in after.iter_mut() {
            let (c0, b0) = before.get(k).copied().unwrap_or_default();
            if *c >= c0 && *b >= b0 {
                *c -= c0;
                *b -= b0;
            }
        }
        usage(after, later.at.duration_since(earlier.at).unwrap_or_default())
    }
}

/// One line of the bill: a topic's publishes, or a subscription's receives and settles, on one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// Backend label.
    pub backend: String,
    /// Topic; `None` for calls for no one topic (listing, provisioning checks, operator tools).
    pub topic: Option<String>,
    /// Subscription; `None` for the topic's own line.
    pub subscription: Option<String>,
    /// Billing service (`SNS`, `SQS`, `Pub/Sub`), or `None` where calls have no price.
    pub service: Option<&'static str>,
    /// API calls per month at the window's rate.
    pub calls_per_month: f64,
    /// Billed units per month (requests or bytes, see `unit`).
    pub billed_per_month: f64,
    /// `request` or `byte`.
    pub unit: &'static str,
    /// Estimated US dollars per month; `None` where the backend has no per-call price.
    pub usd_per_month: Option<f64>,
}

/// The estimated monthly bill.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// Seconds the usage was measured over.
    pub window_secs: f64,
    /// Lines, by topic then subscription.
    pub lines: Vec<Line>,
    /// Sum of the priced lines.
    pub usd_per_month: f64,
    /// Prices used, with their sources and dates.
    pub prices: Vec<Price>,
    /// What the estimate leaves out.
    pub notes: Vec<&'static str>,
}

impl Estimate {
    /// The estimated dollars per month of one subscription (`None`: no priced line).
    pub fn subscription(&self, topic: &str, sub: &str) -> Option<f64> {
        self.lines
            .iter()
            .filter(|l| l.topic.as_deref() == Some(topic) && l.subscription.as_deref() == Some(sub))
            .filter_map(|l| l.usd_per_month)
            .reduce(|a, b| a + b)
    }

    /// The estimated dollars per month of a topic's publishes.
    pub fn topic(&self, topic: &str) -> Option<f64> {
        self.lines
            .iter()
            .filter(|l| l.topic.as_deref() == Some(topic) && l.subscription.is_none())
            .filter_map(|l| l.usd_per_month)
            .reduce(|a, b| a + b)
    }
}

/// Notes every estimate carries.
pub const NOTES: [&str; 4] = [
    "list prices before free tiers, volume discounts, data transfer and storage",
    "SNS and SQS requests from aggregates: max(calls, bytes / 64 KiB); a lower bound when single requests exceed 64 KiB",
    "Pub/Sub delivery: each subscription is billed what its topic published; redeliveries are not counted",
    "a month is 30 days at the measured window's rate",
];

/// (backend, topic, subscription, service).
type LineKey = (String, Option<String>, Option<String>, Option<&'static str>);

#[derive(Default)]
struct Acc {
    calls: f64,
    billed: f64,
    priced: bool,
    /// Billed delivery of what its topic published (Pub/Sub).
    delivery: bool,
}

/// The monthly bill of `usage`, priced by what each backend says of its operations (`backends`: the
/// [`BackendInfo`] of every backend the counters may name; a counter of any other backend is unpriced).
pub fn estimate(usage: &Usage, backends: &[BackendInfo]) -> Estimate {
    let secs = usage.window.as_secs_f64();
    let scale = if secs > 0.0 { MONTH_SECS / secs } else { 0.0 };
    // (backend, topic, subscription, service) -> calls and billed units in the window.
    let mut acc: BTreeMap<LineKey, Acc> = BTreeMap::new();
    let mut published: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut pulled: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for c in &usage.counters {
        let info = backends.iter().find(|b| b.name == c.backend);
        let priced = info.and_then(|b| b.priced(&c.operation));
        let (service, billed) = match priced.map(|p| (p.service, p.billed)) {
            Some((service, Billed::Requests { chunk_bytes })) => {
                (Some(service), c.calls.max((c.bytes / f64::from(chunk_bytes)).ceil()))
            }
            Some((service, Billed::Published { min_request_bytes })) => {
                let billed = c.bytes.max(f64::from(min_request_bytes) * c.calls);
                if let (Some(t), None) = (&c.topic, &c.subscription) {
                    *published.entry((c.backend.clone(), t.clone())).or_default() += billed;
                }
                (Some(service), billed)
            }
            Some((service, Billed::Pulled)) => {
                if let (Some(t), Some(s)) = (&c.topic, &c.subscription) {
                    *pulled.entry((c.backend.clone(), t.clone(), s.clone())).or_default() += c.bytes;
                }
                (Some(service), 0.0)
            }
            Some((service, _)) => (Some(service), 0.0),
            None => (None, 0.0),
        };
        let a = acc.entry((c.backend.clone(), c.topic.clone(), c.subscription.clone(), service)).or_default();
        a.calls += c.calls;
        a.billed += billed;
        a.priced |= service.is_some();
        // A service billed by what is published also bills each subscription delivery of it.
        a.delivery |= info.is_some_and(|b| {
            b.pricing.iter().any(|p| Some(p.service) == service && matches!(p.billed, Billed::Published { .. }))
        });
    }
    // Delivery: every subscription seen on a topic receives what the topic published.
    for ((backend, topic, sub, _), a) in acc.iter_mut() {
        if a.delivery {
            if let (Some(t), Some(s)) = (topic, sub) {
                let p = published.get(&(backend.clone(), t.clone())).copied().unwrap_or(0.0);
                let got = pulled.get(&(backend.clone(), t.clone(), s.clone())).copied().unwrap_or(0.0);
                a.billed += p.max(got);
            }
        }
    }
    let mut lines: Vec<Line> = acc
        .into_iter()
        .map(|((backend, topic, subscription, service), a)| {
            let price = service.and_then(prices::of_service);
            let billed = a.billed * scale;
            Line {
                backend,
                topic,
                subscription,
                service,
                calls_per_month: a.calls * scale,
                billed_per_month: billed,
                unit: price.map_or("request", |p| p.unit),
                usd_per_month: price.filter(|_| a.priced).map(|p| billed * p.usd_per_unit),
            }
        })
        .collect();
    lines.sort_by(|a, b| {
        (a.topic.is_none(), &a.topic, &a.subscription, a.service).cmp(&(
            b.topic.is_none(),
            &b.topic,
            &b.subscription,
            b.service,
        ))
    });
    let used: Vec<Price> =
        prices::ALL.into_iter().filter(|p| lines.iter().any(|l| l.service == Some(p.service))).collect();
    Estimate {
        window_secs: secs,
        usd_per_month: lines.iter().filter_map(|l| l.usd_per_month).sum(),
        lines,
        prices: used,
        notes: NOTES.to_vec(),
    }
}

#[cfg(test)]
mod tests;
