//! A metrics snapshot: the samples of a Prometheus text exposition (what an application's `/metrics` endpoint
//! serves), read from a URL or a file. Only what the estimator and the page need: sample name, labels and value
//! (comments, timestamps and exemplars are skipped).

use std::collections::BTreeMap;
use std::time::SystemTime;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as exposed (`tidings_api_calls_total`).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// The samples of one scrape and when it was taken.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// Samples in exposition order.
    pub samples: Vec<Sample>,
    /// When the scrape was taken (a file: when it was read).
    pub at: SystemTime,
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// A line is not `name{labels} value`.
    #[error("line {line} of the metrics text is not `name{{labels}} value`: {text:?}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// The file or URL could not be read.
    #[error("cannot read metrics from {source_name}: {message}")]
    Read {
        /// The file or URL.
        source_name: String,
        /// What went wrong.
        message: String,
    },
}

impl Scrape {
    /// Parses Prometheus text exposition format (version 0.0.4).
    pub fn parse(text: &str) -> Result<Scrape, ScrapeError> {
        let mut samples = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || ScrapeError::Syntax { line: i + 1, text: raw.to_string() };
            let (name, rest) = match line.find(['{', ' ']) {
                Some(p) => (&line[..p], &line[p..]),
                None => return Err(bad()),
            };
            let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
                let (labels, after) = parse_labels(body).ok_or_else(bad)?;
                (labels, after)
            } else {
                (BTreeMap::new(), rest)
            };
            let value = rest.split_whitespace().next().ok_or_else(bad)?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse::<f64>().map_err(|_| bad())?,
            };
            samples.push(Sample { name: name.to_string(), labels, value });
        }
        Ok(Scrape { samples, at: SystemTime::now() })
    }

    /// Reads a snapshot: `http://...` is fetched (GET), anything else is a file path.
    pub async fn read(source: &str) -> Result<Scrape, ScrapeError> {
        let failed = |message: String| ScrapeError::Read { source_name: source.to_string(), message };
        let text = if source.starts_with("http://") || source.starts_with("https://") {
            let resp = reqwest::get(source).await.map_err(|e| failed(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(failed(format!("HTTP {}", resp.status())));
            }
            resp.text().await.map_err(|e| failed(e.to_string()))?
        } else {
            tokio::fs::read_to_string(source).await.map_err(|e| failed(e.to_string()))?
        };
        Scrape::parse(&text)
    }

    /// Samples of the metric `base` (dots or underscores; `_total` and unit suffixes tolerated).
    pub fn series<'a>(&'a self, base: &str) -> impl Iterator<Item = &'a Sample> + 'a {
        let base = base.replace('.', "_");
        self.samples.iter().filter(move |s| names_match(&s.name, &base))
    }

    /// Sum of the samples of `base` whose labels include every `(key, value)` of `with`.
    pub fn sum(&self, base: &str, with: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.series(base) {
            if with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)) {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }

    /// Mean of a histogram or summary (`_sum` / `_count`, seconds) over the samples whose labels include `with`.
    pub fn mean(&self, base: &str, with: &[(&str, &str)]) -> Option<f64> {
        let base = base.replace('.', "_");
        let part = |suffix: &str| {
            let names = [format!("{base}{suffix}"), format!("{base}_seconds{suffix}")];
            let mut total = None;
            for s in self.samples.iter().filter(|s| names.contains(&s.name)) {
                if with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)) {
                    *total.get_or_insert(0.0) += s.value;
                }
            }
            total
        };
        let (sum, count) = (part("_sum")?, part("_count")?);
        (count > 0.0).then(|| sum / count)
    }
}

/// `tidings_api_bytes_total` and `tidings_api_bytes_bytes_total` (an exporter adding the unit) both match
/// `tidings_api_bytes`.
fn names_match(name: &str, base: &str) -> bool {
    let Some(rest) = name.strip_prefix(base) else { return false };
    matches!(rest, "" | "_total" | "_bytes" | "_bytes_total" | "_seconds")
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the closing brace.
fn parse_labels(body: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        rest = &rest[end + 1..];
        labels.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::Scrape;

    #[test]
    fn samples_with_labels_escapes_and_suffixes_are_read() {
        let s = Scrape::parse(
            "# HELP tidings_api_calls_total Backend API calls\n# TYPE tidings_api_calls_total counter\n\
             tidings_api_calls_total{backend=\"aws\",operation=\"sns:PublishBatch\",topic=\"or\\\"ders\"} 12\n\
             tidings_api_bytes_bytes_total{backend=\"aws\",operation=\"sns:PublishBatch\",topic=\"orders\"} 3.5e3 1700000000\n\
             tidings_handlers_in_flight 2\n",
        )
        .unwrap();
        assert_eq!(s.samples.len(), 3);
        assert_eq!(s.samples[0].labels["topic"], "or\"ders");
        assert_eq!(s.sum("tidings.api.calls", &[("backend", "aws")]), Some(12.0));
        assert_eq!(s.sum("tidings.api.bytes", &[("topic", "orders")]), Some(3500.0));
        assert_eq!(s.sum("tidings.handlers.in_flight", &[]), Some(2.0));
        assert_eq!(s.sum("tidings.api.calls", &[("backend", "gcp")]), None);
    }

    #[test]
    fn a_broken_line_is_named() {
        let e = Scrape::parse("ok 1\nbroken{a=\"1\" 2\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
