//! A capturing metrics recorder for the suite: `metrics-util`'s debugging recorder, installed once per test process
//! as the global recorder, read back filtered by labels (each test uses its own topic names, so tests running at
//! once in one process do not see each other's figures).
//!
//! A snapshot drains histograms: only code holding the suite's exclusive lock (which the trace case and the ledger
//! take) takes one.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();

/// Installs the capturing recorder (once per process); handles resolved before this call stay no-ops, so call it
/// before the bus under test is used.
pub fn install() {
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("the conformance suite installs the process's only metrics recorder");
        tidings_core::metrics::describe();
        snapshotter
    });
}

/// One metric series as read from the recorder.
#[derive(Debug, Clone)]
pub struct Series {
    /// The metric's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Counter value, gauge value, or the number of histogram observations.
    pub value: f64,
    /// Histogram observations (empty for counters and gauges).
    pub observations: Vec<f64>,
}

/// Everything recorded so far, for the series whose labels include `filter`.
pub fn snapshot(filter: &[(&str, &str)]) -> Vec<Series> {
    let snapshotter = SNAPSHOTTER.get().expect("recorded::install() was called first");
    let mut out = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let labels: BTreeMap<String, String> =
            key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
        if !filter.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)) {
            continue;
        }
        let (value, observations) = match (kind, value) {
            (MetricKind::Counter, DebugValue::Counter(c)) => (c as f64, Vec::new()),
            (MetricKind::Gauge, DebugValue::Gauge(g)) => (g.into_inner(), Vec::new()),
            (_, DebugValue::Histogram(h)) => (h.len() as f64, h.into_iter().map(|v| v.into_inner()).collect()),
            (_, v) => panic!("unexpected value {v:?} for metric {}", key.name()),
        };
        out.push(Series { name: key.name().to_string(), labels, value, observations });
    }
    out
}

/// The sum of `name`'s series whose labels include `filter`.
pub fn sum(series: &[Series], name: &str, filter: &[(&str, &str)]) -> f64 {
    series
        .iter()
        .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// `name`'s series whose labels include `filter`, summed by the value of label `by`.
pub fn sum_by(series: &[Series], name: &str, by: &str, filter: &[(&str, &str)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in series {
        if s.name == name && filter.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)) {
            if let Some(b) = s.labels.get(by) {
                *out.entry(b.clone()).or_default() += s.value;
            }
        }
    }
    out
}
