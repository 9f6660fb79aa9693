//! Figures the page shows beside the backend's own: rates derived from successive samples (of the backend's counts,
//! and of the application's metrics where the dashboard has them), the estimated cost per subscription (the
//! estimator of [`crate::cost`]) and the application's in-process figures (handlers in flight, handler latency).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tidings_core::admin::Inventory;

use crate::cost::{self, Scrape, Usage};

/// Where the dashboard reads the application's metrics (Prometheus text).
#[derive(Clone)]
pub enum Metrics {
    /// A scrape URL (`http://127.0.0.1:9000/metrics`) or a file holding a scrape, read at each refresh.
    Source(String),
    /// In process: the text the application's recorder renders now (e.g. `move || handle.render()` with
    /// `metrics-exporter-prometheus`).
    Render(Arc<dyn Fn() -> String + Send + Sync>),
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Metrics::Source(s) => write!(f, "Metrics::Source({s:?})"),
            Metrics::Render(_) => f.write_str("Metrics::Render(..)"),
        }
    }
}

impl Metrics {
    async fn read(&self) -> Result<Scrape, cost::ScrapeError> {
        match self {
            Metrics::Source(s) => Scrape::read(s).await,
            Metrics::Render(f) => Scrape::parse(&f()),
        }
    }

    fn in_process(&self) -> bool {
        matches!(self, Metrics::Render(_))
    }
}

/// Shortest gap between two samples a rate is taken over (the page refreshes every few seconds).
const MIN_GAP_SECS: f64 = 1.0;

/// The rates of one subscription, per second; `None` where nothing tells.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscriptionRates {
    /// Change of the backlog (positive: growing).
    pub backlog: Option<f64>,
    /// Change of the dead-letter queue's depth.
    pub dead_letters: Option<f64>,
    /// Deliveries acked (application metrics).
    pub acked: Option<f64>,
    /// Handlers running now (application metrics, a gauge).
    pub in_flight: Option<f64>,
    /// Mean handler run time in seconds since the application started (application metrics).
    pub handler_mean_secs: Option<f64>,
    /// Estimated dollars per month at the rate measured since the dashboard started.
    pub usd_per_month: Option<f64>,
}

/// What the page shows beside the inventory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Seconds between the two samples the rates come from (`None`: first sample).
    pub rate_window_secs: Option<f64>,
    /// Per `topic/subscription`.
    pub subscriptions: BTreeMap<String, SubscriptionRates>,
    /// Messages published per second, per topic (application metrics).
    pub published: BTreeMap<String, f64>,
    /// The estimate since the dashboard started, where it has metrics.
    pub cost: Option<cost::Estimate>,
    /// Whether the application figures come from inside this process (the embedded router).
    pub in_process: bool,
    /// Figures shown as `–`, each with why.
    pub unknown: Vec<String>,
}

struct Sample {
    at: Instant,
    counts: BTreeMap<String, (Option<u64>, Option<u64>)>,
    scrape: Option<Scrape>,
}

/// Successive samples, kept between requests.
#[derive(Default)]
pub(crate) struct Sampler {
    inner: Mutex<SamplerState>,
}

#[derive(Default)]
struct SamplerState {
    previous: Option<Sample>,
    first_scrape: Option<Scrape>,
}

fn per_sec(now: Option<u64>, before: Option<u64>, secs: f64) -> Option<f64> {
    Some((now? as f64 - before? as f64) / secs)
}

fn delta(now: &Scrape, before: &Scrape, name: &str, with: &[(&str, &str)], secs: f64) -> Option<f64> {
    let (a, b) = (now.sum(name, with)?, before.sum(name, with).unwrap_or(0.0));
    Some(if a >= b { (a - b) / secs } else { a / secs })
}

impl Sampler {
    /// Takes a sample of `inv` (and of the metrics) and derives the figures from it and the previous sample.
    pub(crate) async fn figures(
        &self,
        inv: &Inventory,
        metrics: Option<&Metrics>,
        backend: &tidings_core::backend::BackendInfo,
    ) -> Figures {
        let mut unknown = Vec::new();
        let scrape = match metrics {
            Some(m) => match m.read().await {
                Ok(s) => Some(s),
                Err(e) => {
                    unknown.push(format!("application figures and cost: {e}"));
                    None
                }
            },
            None => {
                unknown.push(
                    "cost, acked rate, in-flight handlers, handler latency: no application metrics (tidings \
                     dashboard --metrics URL, or Dashboard::metrics when embedded)"
                        .to_string(),
                );
                None
            }
        };
        let counts: BTreeMap<String, (Option<u64>, Option<u64>)> = inv
            .topics
            .iter()
            .flat_map(|t| {
                t.subscriptions
                    .iter()
                    .map(move |s| (format!("{}/{}", t.name, s.name), (s.stats.backlog, s.stats.dead_letters)))
            })
            .collect();
        let now = Sample { at: Instant::now(), counts, scrape };
        let mut st = self.inner.lock().unwrap();
        if st.first_scrape.is_none() {
            st.first_scrape = now.scrape.clone();
        }
        let gap = st.previous.as_ref().map(|p| now.at.duration_since(p.at).as_secs_f64());
        let mut f = Figures { in_process: metrics.is_some_and(Metrics::in_process), ..Figures::default() };
        let prev = match (gap, &st.previous) {
            (Some(g), Some(p)) if g >= MIN_GAP_SECS => Some((g, p)),
            _ => None,
        };
        if prev.is_none() {
            unknown.push("rates: need a second sample, a refresh at least a second later".to_string());
        }
        if let (Some(first), Some(s)) = (&st.first_scrape, &now.scrape) {
            let usage = Usage::between(first, s);
            if usage.window.as_secs_f64() >= MIN_GAP_SECS {
                f.cost = Some(cost::estimate(&usage, std::slice::from_ref(backend)));
            } else {
                unknown.push("cost: measuring since the dashboard started; shown from the next refresh".to_string());
            }
        }
        for t in &inv.topics {
            if let (Some((g, p)), Some(s)) = (prev, &now.scrape) {
                if let Some(ps) = &p.scrape {
                    let with = [("topic", t.name.as_str()), ("outcome", "ok")];
                    if let Some(r) = delta(s, ps, "messaging.client.sent.messages", &with, g) {
                        f.published.insert(t.name.clone(), r);
                    }
                }
            }
            for sub in &t.subscriptions {
                let key = format!("{}/{}", t.name, sub.name);
                let with = [("topic", t.name.as_str()), ("subscription", sub.name.as_str())];
                let mut r = SubscriptionRates::default();
                if let Some((g, p)) = prev {
                    let (b0, d0) = p.counts.get(&key).copied().unwrap_or((None, None));
                    r.backlog = per_sec(sub.stats.backlog, b0, g);
                    r.dead_letters = per_sec(sub.stats.dead_letters, d0, g);
                    if let (Some(s), Some(ps)) = (&now.scrape, &p.scrape) {
                        r.acked = delta(s, ps, "tidings.messages.acked", &with, g);
                    }
                }
                if let Some(s) = &now.scrape {
                    r.in_flight = s.sum("tidings.handlers.in_flight", &with);
                    r.handler_mean_secs = s.mean("messaging.process.duration", &with);
                }
                r.usd_per_month = f.cost.as_ref().and_then(|e| e.subscription(&t.name, &sub.name));
                f.subscriptions.insert(key, r);
            }
        }
        f.rate_window_secs = prev.map(|(g, _)| g);
        f.unknown = unknown;
        // Keep the older sample while refreshes come faster than the shortest gap.
        if prev.is_some() || st.previous.is_none() {
            st.previous = Some(now);
        }
        f
    }
}
