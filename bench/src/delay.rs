//! Delayed delivery (`PublishOptions::deliver_at`), measured on every backend: how late after its due time a delayed
//! message's handler starts, and the API calls a delayed message costs while the runtime holds it.
//!
//! `tidings-bench delay_lateness [--quick] [--messages N] [--backends local,sqlite,...] [--phases idle,load]`: per
//! backend, N messages
//! (400; `--quick` 100) published in 5 waves 1 s apart, each wave one `publish_batch` whose delays are spread evenly
//! over 1-5 s (a golden-ratio sequence); the handler notes its start time; lateness = handler start minus the due time
//! the publisher asked for (nanoseconds, so a delivery before its due time counts as early, however slightly). Every
//! backend runs once on an otherwise idle subscription, then once more beside `stress-ng --cpu 2` (started here, one
//! process for the whole loaded phase, stopped by its pid at the end). Prints one line per backend,
//! `delay_lateness_<backend>`. Backends: local, sqlite (a temporary file), postgres (`DATABASE_URL`, a fresh schema
//! dropped at the end), nats (`NATS_URL`), gcp (the shimmed emulator at `PUBSUB_EMULATOR_HOST`), gcp_stock (the stock
//! emulator at `TIDINGS_BENCH_GCP_STOCK_HOST`, default 127.0.0.1:8086; left out when none answers), aws (LocalStack
//! at `AWS_ENDPOINT_URL`). Default configurations throughout, as an application gets them.
//!
//! `tidings-bench delay_hold_calls [--quick] [--holds SHORT,LONG] [--held K] [--backends aws,nats,gcp]`: per held
//! backend, K messages (1) on a fresh subscription of a bus of their own, held SHORT and LONG seconds (60 and 120;
//! `--quick` 20 and 40), beside two controls each on a bus of its own: the same messages published undelayed at the
//! same moment, and nothing published (the subscription's own polling). Calls are counted over the same window
//! (publish to due time + 20 s) in three phases: taking the hold (the first 5 s), holding (until 3 s before due), at
//! due (the rest). A delayed message's calls are its run's minus the idle run's, per message; what it costs beyond an
//! undelayed one is that minus the undelayed run's. AWS and NATS calls are the backend's own counters
//! (`Bus::api_calls`); on GCP the lease extensions, acks and the copy's publish are the client library's gRPC calls,
//! which tidings' counters do not see one by one, so they are counted from the library's `grpc.request` tracing spans
//! (`GOOGLE_CLOUD_RUST_LOGGING=true`, set here), each bus reaching the emulator through a TCP forwarder of its own so
//! its calls carry its port. One hour held is extrapolated per operation: calls(1 h) = taking + at due + rate x 3600 s,
//! the rate being the holding phase's calls over its length (polls excepted: a running subscription makes them
//! whether or not it holds anything), on GCP the lease extensions' measured interval. Prints one line per backend,
//! `delay_hold_calls_<backend>`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Message, PublishOptions, SubscriptionConfig, Topic, TopicConfig};

/// Every backend the lateness benchmark knows, in the order it runs them.
const BACKENDS: [&str; 7] = ["local", "sqlite", "postgres", "nats", "gcp", "gcp_stock", "aws"];
/// The backends that hold delayed messages (no native delay), whose held messages cost calls.
const HELD: [&str; 3] = ["aws", "nats", "gcp"];
const WAVES: u64 = 5;
/// Shortest and longest delay of the lateness benchmark, in milliseconds.
const MIN_DELAY_MS: u64 = 1_000;
const SPREAD_MS: u64 = 4_000;

#[derive(Serialize, Deserialize)]
struct Delayed {
    n: u64,
    /// The due time the publisher asked for, nanoseconds since the Unix epoch.
    due_ns: i64,
    pad: String,
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn unique(base: &str) -> &'static str {
    let id = uuid::Uuid::now_v7().simple().to_string();
    Box::leak(format!("{base}-{}", &id[id.len() - 10..]).into_boxed_str())
}

pub(crate) fn today() -> String {
    let days = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The machine, as the report prints it: "2 CPUs (model)".
pub(crate) fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cpus} CPUs ({model})")
}

/// The machine's CPU time so far (all cores, from `/proc/stat`): (busy, total) in clock ticks.
pub(crate) fn machine_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> =
        s.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = f.iter().take(8).sum();
    // idle and iowait are fields 4 and 5.
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Percent of the machine's CPU busy between two [`machine_ticks`] readings (this process, the servers, anything else).
fn busy_pct(a: (u64, u64), b: (u64, u64)) -> f64 {
    let total = b.1.saturating_sub(a.1).max(1);
    (b.0.saturating_sub(a.0) as f64 * 100.0 / total as f64 * 10.0).round() / 10.0
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

fn reachable(hostport: &str) -> bool {
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// What a backend leaves behind to clean up.
enum Leftover {
    Nothing,
    Dir(std::path::PathBuf),
    Schema(String),
}

impl Leftover {
    async fn clean(self) {
        match self {
            Leftover::Nothing => {}
            Leftover::Dir(d) => {
                let _ = std::fs::remove_dir_all(d);
            }
            Leftover::Schema(s) => {
                if let Ok(pool) = sqlx::PgPool::connect(&pg_url()).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE")).execute(&pool).await;
                    pool.close().await;
                }
            }
        }
    }
}

fn pg_url() -> String {
    env_or("DATABASE_URL", tidings_sql::config::DEFAULT_POSTGRES_URL)
}

/// A fresh bus on backend `name` with its default configuration; `gcp_host` overrides the emulator's address.
async fn open(name: &str, gcp_host: Option<&str>) -> Result<(Bus, Leftover), String> {
    use tidings_sql::{PostgresConfig, SqlBackend, SqliteConfig};
    let bus = |b: Arc<dyn tidings_core::Backend>| Bus::new(b);
    let err = |e: tidings_core::Error| format!("{name}: {e}");
    match name {
        "local" => Ok((bus(Arc::new(tidings_local::LocalBackend::new())), Leftover::Nothing)),
        "sqlite" => {
            let dir = std::env::temp_dir().join(unique("tidings-bench-delay"));
            let b = SqlBackend::sqlite(SqliteConfig::at(dir.join("bus.db"))).await.map_err(err)?;
            Ok((bus(Arc::new(b)), Leftover::Dir(dir)))
        }
        "postgres" => {
            let schema = unique("tidings_bench_delay").replace('-', "_");
            let b = SqlBackend::postgres(PostgresConfig::at(pg_url(), schema.clone())).await.map_err(err)?;
            Ok((bus(Arc::new(b)), Leftover::Schema(schema)))
        }
        "nats" => {
            let mut c = tidings_nats::NatsConfig::default();
            c.url = Some(env_or("NATS_URL", "nats://127.0.0.1:4222"));
            Ok((bus(Arc::new(tidings_nats::NatsBackend::new(c).await.map_err(err)?)), Leftover::Nothing))
        }
        "gcp" | "gcp_stock" => {
            let host = match gcp_host {
                Some(h) => h.to_string(),
                None if name == "gcp" => env_or("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
                None => env_or("TIDINGS_BENCH_GCP_STOCK_HOST", "127.0.0.1:8086"),
            };
            if !reachable(&host) {
                return Err(format!("{name}: no Pub/Sub emulator answers at {host}"));
            }
            let mut c = tidings_gcp::GcpConfig::default();
            c.project_id = Some(env_or("PUBSUB_PROJECT_ID", "tidings-test"));
            c.endpoint = Some(format!("http://{host}"));
            Ok((bus(Arc::new(tidings_gcp::GcpBackend::new(c).await.map_err(err)?)), Leftover::Nothing))
        }
        "aws" => {
            let mut c = tidings_aws::AwsConfig::default();
            c.region = Some(env_or("AWS_REGION", "us-east-1"));
            c.endpoint_url = Some(env_or("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"));
            Ok((bus(Arc::new(tidings_aws::AwsBackend::new(c).await.map_err(err)?)), Leftover::Nothing))
        }
        other => Err(format!("unknown backend {other:?}; one of {}", BACKENDS.join(" "))),
    }
}

fn list_arg(args: &[String], name: &str) -> Option<Vec<String>> {
    let i = args.iter().position(|a| a == name)?;
    Some(args.get(i + 1)?.split(',').map(str::to_string).filter(|s| !s.is_empty()).collect())
}

/// One handler start: message number, lateness in nanoseconds (negative: early), attempt.
type Start = (u64, i64, u32);

/// What one phase of one backend measured.
struct Phase {
    starts: Vec<Start>,
    n: u64,
    cpu_busy_pct: f64,
}

impl Phase {
    fn figures(&self, prefix: &str) -> Vec<(String, serde_json::Value)> {
        let mut first: BTreeMap<u64, i64> = BTreeMap::new();
        for (n, late, _) in &self.starts {
            first.entry(*n).or_insert(*late);
        }
        let mut late: Vec<i64> = first.values().copied().collect();
        late.sort_unstable();
        let q = |p: f64| -> f64 {
            if late.is_empty() {
                return f64::NAN;
            }
            let i = ((p * late.len() as f64).ceil() as usize).clamp(1, late.len()) - 1;
            ms(late[i])
        };
        let early = self.starts.iter().filter(|(_, l, _)| *l < 0).count();
        let retried = self.starts.iter().filter(|(_, _, a)| *a != 1).count();
        let j = |v: f64| serde_json::json!((v * 10.0).round() / 10.0);
        vec![
            (format!("{prefix}_p50_ms"), j(q(0.50))),
            (format!("{prefix}_p99_ms"), j(q(0.99))),
            (format!("{prefix}_max_ms"), j(late.last().map_or(f64::NAN, |v| ms(*v)))),
            (format!("{prefix}_min_ms"), j(late.first().map_or(f64::NAN, |v| ms(*v)))),
            (format!("{prefix}_early"), serde_json::json!(early)),
            (format!("{prefix}_missing"), serde_json::json!(self.n - first.len() as u64)),
            (format!("{prefix}_duplicates"), serde_json::json!(self.starts.len() - first.len())),
            (format!("{prefix}_not_first_attempt"), serde_json::json!(retried)),
            (format!("{prefix}_cpu_busy_pct"), serde_json::json!(self.cpu_busy_pct)),
        ]
    }
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// The delay of message `k`: spread evenly over 1-5 s by the golden-ratio sequence, so every wave covers the range.
fn delay_of(k: u64) -> Duration {
    let frac = (k as f64 * 0.618_033_988_749_895).fract();
    Duration::from_millis(MIN_DELAY_MS + (frac * SPREAD_MS as f64) as u64)
}

/// Publishes `n` delayed messages in [`WAVES`] waves 1 s apart on a fresh topic of `bus` and notes when each handler
/// starts; waits for all of them (or until a minute after the last due time), then 2 s more for late copies.
async fn lateness_phase(bus: &Bus, n: u64) -> Phase {
    let topic = Topic::<Delayed>::new(unique("delay-lateness"), TopicConfig::at_least_once());
    let starts: Arc<Mutex<Vec<Start>>> = Arc::default();
    let s = starts.clone();
    let sub = bus
        .subscribe(&topic, "lateness", SubscriptionConfig::default(), move |m: Message<Delayed>| {
            let now = nanos(SystemTime::now());
            s.lock().unwrap().push((m.n, now - m.due_ns, m.attempt()));
            std::future::ready(Ok(()))
        })
        .await
        .expect("subscribe");
    tokio::time::sleep(Duration::from_secs(1)).await; // the subscription's first receive is under way
    let cpu0 = machine_ticks();
    let per_wave = n.div_ceil(WAVES);
    let pad = "x".repeat(64);
    let start = tokio::time::Instant::now();
    let mut last_due = SystemTime::now();
    for w in 0..WAVES {
        tokio::time::sleep_until(start + Duration::from_secs(w)).await;
        let sent = SystemTime::now();
        let wave: Vec<(Delayed, SystemTime)> = (w * per_wave..((w + 1) * per_wave).min(n))
            .map(|k| {
                let due = sent + delay_of(k);
                (Delayed { n: k, due_ns: nanos(due), pad: pad.clone() }, due)
            })
            .collect();
        last_due = wave.iter().map(|(_, d)| *d).fold(last_due, SystemTime::max);
        topic
            .publish_batch(bus, wave.iter().map(|(m, due)| (m, PublishOptions::new().deliver_at(*due))))
            .await
            .expect("publish");
    }
    let give_up = last_due + Duration::from_secs(60);
    loop {
        let distinct = {
            let st = starts.lock().unwrap();
            st.iter().map(|s| s.0).collect::<std::collections::HashSet<_>>().len() as u64
        };
        if distinct >= n || SystemTime::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_busy_pct = busy_pct(cpu0, machine_ticks());
    sub.shutdown(Duration::from_secs(5)).await;
    let starts = std::mem::take(&mut *starts.lock().unwrap());
    Phase { starts, n, cpu_busy_pct }
}

/// `stress-ng --cpu 2` for the loaded phase, stopped (SIGTERM to its pid, so it stops its workers) when dropped; its
/// own `--timeout` ends it should this process die first.
struct Stress(std::process::Child);

impl Stress {
    fn start() -> Self {
        let child = std::process::Command::new("stress-ng")
            .args(["--cpu", "2", "--timeout", "3600", "--quiet"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("stress-ng (apt-get install stress-ng) for the loaded phase");
        Self(child)
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

pub async fn lateness(args: &[String], quick: bool) -> String {
    let n = crate::util::arg(args, "--messages").unwrap_or(if quick { 100 } else { 400 });
    let wanted: Vec<String> = list_arg(args, "--backends").unwrap_or_else(|| BACKENDS.map(String::from).to_vec());
    let phases = list_arg(args, "--phases").unwrap_or_else(|| vec!["idle".into(), "load".into()]);
    if let Some(p) = phases.iter().find(|p| *p != "idle" && *p != "load") {
        panic!("--phases: {p:?} is neither idle nor load");
    }
    let mut rows: BTreeMap<String, Vec<(String, serde_json::Value)>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for phase in phases.iter().map(String::as_str) {
        let _stress = (phase == "load").then(Stress::start);
        if phase == "load" {
            tokio::time::sleep(Duration::from_secs(2)).await; // the workers are spinning
        }
        for name in &wanted {
            if skipped.contains(name) {
                continue;
            }
            let (bus, leftover) = match open(name, None).await {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("delay_lateness: {e}; left out");
                    skipped.push(name.clone());
                    continue;
                }
            };
            eprintln!("delay_lateness: {name} {phase}");
            let p = lateness_phase(&bus, n).await;
            bus.shutdown(Duration::from_secs(5)).await;
            leftover.clean().await;
            rows.entry(name.clone()).or_default().extend(p.figures(phase));
        }
    }
    let date = today();
    wanted
        .iter()
        .filter_map(|name| rows.remove(name).map(|r| (name, r)))
        .map(|(name, figures)| {
            let mut o = serde_json::Map::new();
            o.insert("backend".into(), name.as_str().into());
            o.insert("messages".into(), n.into());
            o.insert("waves".into(), WAVES.into());
            o.insert("delays_s".into(), "1-5".into());
            o.insert("date".into(), date.clone().into());
            o.insert("machine".into(), machine().into());
            o.extend(figures);
            line(&format!("delay_lateness_{name}"), o)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------------------------
// API calls per held message

/// gRPC requests of Google's client library, by (emulator port the request went to, method), from its `grpc.request`
/// spans: when each began.
#[derive(Clone, Default)]
struct RpcCounter(Arc<Mutex<BTreeMap<RpcKey, Vec<tokio::time::Instant>>>>);

/// The emulator port a gRPC request went to, and its method.
type RpcKey = (i64, String);

#[derive(Default)]
struct RpcFields {
    method: Option<String>,
    port: Option<i64>,
}

impl tracing::field::Visit for RpcFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "rpc.method" {
            self.method = Some(value.rsplit('/').next().unwrap_or(value).to_string());
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if field.name() == "server.port" {
            self.port = Some(value);
        }
    }
    fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RpcCounter {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "grpc.request" {
            return;
        }
        let mut f = RpcFields::default();
        attrs.record(&mut f);
        if let (Some(m), Some(p)) = (f.method, f.port) {
            self.0.lock().unwrap().entry((p, m)).or_default().push(tokio::time::Instant::now());
        }
    }
}

impl RpcCounter {
    fn for_port(&self, port: u16) -> BTreeMap<String, u64> {
        let c = self.0.lock().unwrap();
        c.iter()
            .filter(|((p, _), _)| *p == i64::from(port))
            .map(|((_, m), v)| (format!("grpc:{m}"), v.len() as u64))
            .collect()
    }

    /// When the calls of `method` to `port` began.
    fn times(&self, port: u16, method: &str) -> Vec<tokio::time::Instant> {
        self.0.lock().unwrap().get(&(i64::from(port), method.to_string())).cloned().unwrap_or_default()
    }
}

/// A TCP forwarder on a port of its own to `upstream`, so one bus's gRPC calls to the emulator carry that port.
async fn forwarder(upstream: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a forwarder");
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    port
}

type Counts = BTreeMap<String, u64>;

/// What a hold run publishes: its messages delayed by the hold, the same messages undelayed, or nothing (the
/// subscription's own polling over the window, which the other two are measured against).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Delayed,
    Undelayed,
    Idle,
}

/// One run of the hold benchmark: call counts at the start, after taking the hold (5 s), 3 s before due and at the
/// end (due + [`HOLD_TAIL`]); the handler starts (lateness, attempt); on GCP the mean interval between the library's
/// lease extensions while the message was held.
struct HoldRun {
    snapshots: [Counts; 4],
    handled: Vec<(i64, u32)>,
    extension_interval_s: Option<f64>,
}

/// How long after the due time a hold run goes on counting (the copy's delivery and ack, and a margin).
const HOLD_TAIL: Duration = Duration::from_secs(20);
/// The end of the phase "taking the hold", after the publish.
const TAKING: Duration = Duration::from_secs(5);
/// The end of the phase "holding", before the due time.
const BEFORE_DUE: Duration = Duration::from_secs(3);

/// `held` messages on a fresh subscription of a fresh bus on `backend`, published as `kind` says; the calls counted
/// at the four points of [`HoldRun`].
async fn hold_run(backend: &str, hold: Duration, held: u64, kind: Kind, rpc: RpcCounter) -> HoldRun {
    let port = match backend {
        "gcp" => Some(forwarder(env_or("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")).await),
        _ => None,
    };
    let host = port.map(|p| format!("127.0.0.1:{p}"));
    let (bus, _) = open(backend, host.as_deref()).await.unwrap_or_else(|e| panic!("{e}"));
    let topic = Topic::<Delayed>::new(unique("delay-hold"), TopicConfig::at_least_once());
    let handled: Arc<Mutex<Vec<(i64, u32)>>> = Arc::default();
    let h = handled.clone();
    let sub = bus
        .subscribe(&topic, "held", SubscriptionConfig::default(), move |m: Message<Delayed>| {
            h.lock().unwrap().push((nanos(SystemTime::now()) - m.due_ns, m.attempt()));
            std::future::ready(Ok(()))
        })
        .await
        .expect("subscribe");
    // Provisioning is over; the topic driver is opened (and provisioned) by a first publish on every kind of run.
    topic.publish_batch(&bus, std::iter::empty()).await.expect("open the topic");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = || {
        let mut c: Counts = bus
            .api_calls()
            .map(|a| a.snapshot().into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            .unwrap_or_default();
        if let Some(p) = port {
            // On GCP the subscriber's wire calls are the client library's: tidings' own counters there count driver
            // calls (acks and nacks the library batches). tidings' `pubsub:Publish` counts the topic's REST publishes
            // and the copies a subscription publishes through the library (seen as `grpc:Publish` too): only the
            // REST ones are kept from it.
            let library = rpc.for_port(p);
            let copies = library.get("grpc:Publish").copied().unwrap_or(0);
            let rest = c.get("pubsub:Publish").copied().unwrap_or(0).saturating_sub(copies);
            c.retain(|k, _| k == "pubsub:StreamingPull");
            c.insert("rest:Publish".into(), rest);
            c.extend(library);
        }
        c
    };
    let t0 = tokio::time::Instant::now();
    let s0 = counts();
    let due = SystemTime::now() + hold;
    let pad = "x".repeat(64);
    let msgs: Vec<Delayed> = (0..held).map(|n| Delayed { n, due_ns: nanos(due), pad: pad.clone() }).collect();
    let options = match kind {
        Kind::Delayed => PublishOptions::new().deliver_at(due),
        _ => PublishOptions::new(),
    };
    if kind != Kind::Idle {
        topic.publish_batch(&bus, msgs.iter().map(|m| (m, options.clone()))).await.expect("publish");
    }
    tokio::time::sleep_until(t0 + TAKING).await;
    let s1 = counts();
    tokio::time::sleep_until(t0 + hold - BEFORE_DUE).await;
    let (s2, t2) = (counts(), tokio::time::Instant::now());
    tokio::time::sleep_until(t0 + hold + HOLD_TAIL).await;
    let s3 = counts();
    sub.shutdown(Duration::from_secs(5)).await;
    bus.shutdown(Duration::from_secs(5)).await;
    let extension_interval_s = port.and_then(|p| {
        let t: Vec<_> = rpc.times(p, "ModifyAckDeadline").into_iter().filter(|t| *t >= t0 && *t <= t2).collect();
        (t.len() >= 2).then(|| (t[t.len() - 1] - t[0]).as_secs_f64() / (t.len() - 1) as f64)
    });
    let handled = std::mem::take(&mut *handled.lock().unwrap());
    HoldRun { snapshots: [s0, s1, s2, s3], handled, extension_interval_s }
}

fn diff(a: &Counts, b: &Counts) -> Counts {
    b.iter().map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0))).collect()
}

/// Per operation, run `a`'s calls minus run `b`'s from snapshot `i` to `j`, per message.
fn minus(a: &HoldRun, b: &HoldRun, i: usize, j: usize, held: u64) -> BTreeMap<String, f64> {
    let x = diff(&a.snapshots[i], &a.snapshots[j]);
    let y = diff(&b.snapshots[i], &b.snapshots[j]);
    let ops: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    ops.into_iter()
        .map(|op| {
            let v = x.get(op).copied().unwrap_or(0) as f64 - y.get(op).copied().unwrap_or(0) as f64;
            (op.clone(), v / held as f64)
        })
        .collect()
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A JSON line whose first key is `bench` (serde_json sorts the others).
fn line(bench: &str, rest: serde_json::Map<String, serde_json::Value>) -> String {
    let rest = serde_json::Value::Object(rest).to_string();
    let rest = &rest[1..rest.len() - 1];
    format!("{{\"bench\":{}{}{rest}}}", serde_json::Value::from(bench), if rest.is_empty() { "" } else { "," })
}

pub async fn hold_calls(args: &[String], quick: bool) -> String {
    let holds: Vec<u64> = list_arg(args, "--holds")
        .map(|v| v.iter().filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| if quick { vec![20, 40] } else { vec![60, 120] });
    let (short, long) = match holds[..] {
        [s, l] if s >= 10 && l > s => (s, l),
        _ => panic!("--holds SHORT,LONG: two whole seconds, 10 <= SHORT < LONG (got {holds:?})"),
    };
    let held = crate::util::arg(args, "--held").unwrap_or(1).max(1);
    let wanted: Vec<String> = list_arg(args, "--backends").unwrap_or_else(|| HELD.map(String::from).to_vec());
    if let Some(b) = wanted.iter().find(|b| !HELD.contains(&b.as_str())) {
        panic!("delay_hold_calls: {b:?} does not hold delayed messages; one of {}", HELD.join(" "));
    }
    // The client library makes its gRPC calls with a `grpc.request` span each when this is set (read when a client is
    // built, so before any bus is opened).
    std::env::set_var("GOOGLE_CLOUD_RUST_LOGGING", "true");
    let rpc = RpcCounter::default();
    use tracing_subscriber::layer::SubscriberExt;
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(rpc.clone()))
        .expect("no other tracing subscriber (TIDINGS_BENCH_OBSERVE is not for this benchmark)");
    let cpu0 = machine_ticks();
    // Every run at once: each on a bus (and, on GCP, an emulator port) of its own, so their counts stay apart.
    let mut runs = Vec::new();
    for b in &wanted {
        for hold in [short, long] {
            for kind in [Kind::Delayed, Kind::Undelayed, Kind::Idle] {
                let (b, rpc) = (b.clone(), rpc.clone());
                runs.push(tokio::spawn(async move {
                    let r = hold_run(&b, Duration::from_secs(hold), held, kind, rpc).await;
                    ((b, hold, kind), r)
                }));
            }
        }
    }
    let mut done: BTreeMap<(String, u64, Kind), HoldRun> = BTreeMap::new();
    for r in runs {
        let (k, v) = r.await.expect("hold run");
        done.insert(k, v);
    }
    let cpu_busy = busy_pct(cpu0, machine_ticks());
    let date = today();
    let mut lines = Vec::new();
    for b in &wanted {
        let get = |hold: u64, kind: Kind| &done[&(b.clone(), hold, kind)];
        let mut once_on_time = true;
        for hold in [short, long] {
            for kind in [Kind::Delayed, Kind::Undelayed, Kind::Idle] {
                let r = get(hold, kind);
                let want = if kind == Kind::Idle { 0 } else { held };
                let once = r.handled.len() as u64 == want && r.handled.iter().all(|(_, a)| *a == 1);
                let early = kind == Kind::Delayed && r.handled.iter().any(|(late, _)| *late < 0);
                if !once || early {
                    eprintln!("delay_hold_calls: {b} hold {hold} s {kind:?}: handled {:?}", r.handled);
                    once_on_time = false;
                }
            }
            for (kind, r) in [Kind::Delayed, Kind::Undelayed, Kind::Idle].map(|k| (k, get(hold, k))) {
                let phases: Vec<Counts> = (0..3).map(|i| diff(&r.snapshots[i], &r.snapshots[i + 1])).collect();
                eprintln!(
                    "delay_hold_calls: {b} hold {hold} s {kind:?} calls by phase (taking, holding, at due): {phases:?}"
                );
            }
        }
        let (dl, il) = (get(long, Kind::Delayed), get(long, Kind::Idle));
        let total_short = minus(get(short, Kind::Delayed), get(short, Kind::Idle), 0, 3, held);
        let total_long = minus(dl, il, 0, 3, held);
        let undelayed = minus(get(long, Kind::Undelayed), il, 0, 3, held);
        let (taking, holding, at_due) =
            (minus(dl, il, 0, 1, held), minus(dl, il, 1, 2, held), minus(dl, il, 2, 3, held));
        let holding_s = (long - TAKING.as_secs() - BEFORE_DUE.as_secs()) as f64;
        // GCP: the library extends a held lease on a schedule; the interval measured over the whole hold rates it
        // more finely than a count in one window.
        let interval = dl.extension_interval_s;
        let mut calls = serde_json::Map::new();
        let (mut sums, mut any) = ([0.0; 5], false);
        let ops: std::collections::BTreeSet<&String> =
            total_long.keys().chain(total_short.keys()).chain(undelayed.keys()).collect();
        for op in ops {
            let g = |m: &BTreeMap<String, f64>| m.get(op).copied().unwrap_or(0.0);
            let (s, l, u) = (g(&total_short), g(&total_long), g(&undelayed));
            if s == 0.0 && l == 0.0 && u == 0.0 {
                continue;
            }
            // Calls per second held: GCP's lease extensions from their measured interval; none for the polls, which
            // a running subscription makes whether or not it holds anything (their difference to the idle run while
            // holding is the poll timer's phase, within one call); the holding phase's calls over its length for
            // the rest.
            let rate = match (op.as_str(), interval) {
                ("grpc:ModifyAckDeadline", Some(i)) => 1.0 / i / held as f64,
                ("sqs:ReceiveMessage" | "PULL" | "pubsub:StreamingPull", _) => 0.0,
                _ => g(&holding) / holding_s,
            };
            let hour = g(&taking) + g(&at_due) + rate * 3600.0;
            for (sum, v) in sums.iter_mut().zip([s, l, u, hour, hour - u]) {
                *sum += v;
            }
            any = true;
            calls.insert(
                op.clone(),
                serde_json::json!({"short": round2(s), "long": round2(l), "undelayed": round2(u),
                    "taking": round2(g(&taking)), "holding": round2(g(&holding)), "at_due": round2(g(&at_due)),
                    "held_per_hour": round2(rate * 3600.0),
                    "slope_per_hour": round2((l - s) / (long - short) as f64 * 3600.0),
                    "per_hour": round2(hour), "extra_per_hour": round2(hour - u)}),
            );
        }
        let mut o = serde_json::Map::new();
        o.insert("backend".into(), b.as_str().into());
        o.insert("held_messages".into(), held.into());
        o.insert("short_s".into(), short.into());
        o.insert("long_s".into(), long.into());
        o.insert("tail_s".into(), HOLD_TAIL.as_secs().into());
        o.insert("date".into(), date.clone().into());
        o.insert("machine".into(), machine().into());
        for (k, v) in
            ["total_short", "total_long", "total_undelayed", "total_per_hour", "extra_per_hour"].iter().zip(sums)
        {
            o.insert(k.to_string(), round2(if any { v } else { 0.0 }).into());
        }
        if let Some(i) = interval {
            o.insert("extension_interval_s".into(), round2(i).into());
        }
        o.insert("delivered_once_on_time".into(), once_on_time.into());
        o.insert("cpu_busy_pct".into(), cpu_busy.into());
        o.insert("calls".into(), calls.into());
        lines.push(line(&format!("delay_hold_calls_{b}"), o));
    }
    lines.join("\n")
}
