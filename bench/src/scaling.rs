//! `local_scaling`: how the in-memory bus's cost grows along three axes, beside the raw-tokio fan-out baseline of
//! [`crate::local`]: subscriptions (1, 4, 16, 64; ~100-byte payloads), payload size (100 B, 4 KiB, 64 KiB; one
//! subscription) and the backlog of a stalled subscription (10 k, 1 M, 10 M queued; `--quick` skips 10 M).
//!
//! Every measurement runs in a child process of its own (`tidings-bench local_scaling_point ...`), so its peak RSS
//! (`VmHWM`) is that point's alone: in one process the allocator keeps what an earlier point freed. Rounds interleave
//! the baseline and tidings; figures are medians of the rounds.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tidings_core::{Bus, Message, SubscriptionConfig, Topic, TopicConfig};
use tidings_local::{LocalBackend, LocalConfig};

use crate::local::{baseline_fanout_of, median, tidings_fanout_of, Live};
use crate::util::{event, mb, minor_faults, peak_rss, rss, Event};

static SUBS: Topic<Event> = Topic::new("scaling-subs", TopicConfig::at_least_once());
static PAYLOAD: Topic<Blob> = Topic::new("scaling-payload", TopicConfig::at_least_once());
static BACKLOG: Topic<Event> = Topic::new("scaling-backlog", TopicConfig::at_least_once());

/// A payload of a chosen size: an id and a string filler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blob {
    pub id: u64,
    pub data: String,
}

/// A maker of [`Blob`]s whose JSON is `bytes` long (give or take the id's digits).
fn blob_maker(bytes: usize) -> impl Fn(u64) -> Blob {
    let overhead = serde_json::to_vec(&Blob { id: 500_000, data: String::new() }).unwrap().len();
    let data: String = (0..bytes.saturating_sub(overhead)).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    move |i| Blob { id: i, data: data.clone() }
}

/// Runs one point in a child process and parses its JSON line.
fn child(args: &[String]) -> Value {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe).arg("local_scaling_point").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with('{')).unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("point {args:?} gave no JSON ({e}): {text} {}", String::from_utf8_lossy(&out.stderr))
    })
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// Interleaved rounds of baseline and tidings at one point (`axis` is `subs` or `payload`, `x` its value).
fn fanout_point(axis: &str, x: u64, n: u64, rounds: usize) -> Value {
    let (mut base, mut tid, mut publ, mut ratio, mut base_rss, mut tid_rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut base_faults, mut tid_faults) = (Vec::new(), Vec::new());
    let mut payload = 0.0;
    for _ in 0..rounds {
        let args = |side: &str| [axis, side, &x.to_string(), &n.to_string()].map(String::from);
        let b = child(&args("baseline"));
        let t = child(&args("tidings"));
        base.push(f(&b, "deliveries_per_s"));
        tid.push(f(&t, "deliveries_per_s"));
        publ.push(f(&t, "publish_msgs_per_s"));
        ratio.push(f(&t, "deliveries_per_s") / f(&b, "deliveries_per_s"));
        base_rss.push(f(&b, "peak_rss_mb"));
        tid_rss.push(f(&t, "peak_rss_mb"));
        base_faults.push(f(&b, "page_faults_per_msg"));
        tid_faults.push(f(&t, "page_faults_per_msg"));
        payload = f(&t, "payload_bytes");
    }
    let key = if axis == "subs" { "subscriptions" } else { "payload_bytes" };
    let mut v = json!({
        "messages": n,
        "tidings_deliveries_per_s": median(&mut tid).round() as u64,
        "baseline_deliveries_per_s": median(&mut base).round() as u64,
        "vs_baseline": (median(&mut ratio) * 100.0).round() / 100.0,
        "tidings_publish_msgs_per_s": median(&mut publ).round() as u64,
        "tidings_peak_rss_mb": (median(&mut tid_rss) * 10.0).round() / 10.0,
        "baseline_peak_rss_mb": (median(&mut base_rss) * 10.0).round() / 10.0,
        "tidings_page_faults_per_msg": (median(&mut tid_faults) * 100.0).round() / 100.0,
        "baseline_page_faults_per_msg": (median(&mut base_faults) * 100.0).round() / 100.0,
    });
    v[key] = if axis == "subs" { json!(x) } else { json!(payload) };
    v
}

/// Backlog point: tidings' cost per queued message and live throughput beside it, and the baseline's cost per
/// message queued in an unbounded mpsc nobody receives from.
fn backlog_point(queued: u64, m: u64, rounds: usize) -> Value {
    let t = child(&["backlog", "tidings", &queued.to_string(), &m.to_string(), &rounds.to_string()].map(String::from));
    let b = child(&["backlog", "baseline", &queued.to_string()].map(String::from));
    let mut v = t;
    v["baseline_bytes_per_queued_msg"] = b["bytes_per_queued_msg"].clone();
    v["baseline_fill_msgs_per_s"] = b["fill_msgs_per_s"].clone();
    v["baseline_peak_rss_mb"] = b["peak_rss_mb"].clone();
    v
}

/// The parent: every point, one JSON line.
pub fn run(quick: bool) -> String {
    let rounds = 3;
    let deliveries = if quick { 200_000 } else { 1_000_000 };
    let floor = if quick { 20_000 } else { 100_000 };
    let subscriptions: Vec<Value> = [1u64, 4, 16, 64]
        .iter()
        .map(|&k| {
            eprintln!("local_scaling: {k} subscriptions");
            fanout_point("subs", k, (deliveries / k).max(floor), rounds)
        })
        .collect();
    // A byte budget per run, so large payloads do not take minutes (or gigabytes: tidings' backlog limit counts
    // messages, not bytes).
    let budget: u64 = if quick { 128 << 20 } else { 512 << 20 };
    let payload: Vec<Value> = [100u64, 4096, 65536]
        .iter()
        .map(|&bytes| {
            eprintln!("local_scaling: {bytes}-byte payloads");
            fanout_point("payload", bytes, (budget / bytes).min(deliveries), rounds)
        })
        .collect();
    let sizes: &[u64] = if quick { &[10_000, 1_000_000] } else { &[10_000, 1_000_000, 10_000_000] };
    let (m, backlog_rounds) = if quick { (20_000, 3) } else { (50_000, 5) };
    let backlog: Vec<Value> = sizes
        .iter()
        .map(|&q| {
            eprintln!("local_scaling: backlog of {q}");
            backlog_point(q, m, backlog_rounds)
        })
        .collect();
    let line = json!({
        "bench": "local_scaling",
        "rounds": rounds,
        "rss_note": "peak RSS (VmHWM) of a child process that ran that point alone, start-up included; medians of the rounds; \
    page_faults_per_msg: minor page faults (memory fresh from the kernel) of the measured run over the messages published",
        "backlog_note": "bytes_per_queued_msg: RSS growth while filling a stalled subscription, over the messages queued \
    (payload included); live rates: a live subscription on the backlog's topic (each message also queued for the stalled one, \
    so the backlog grows by rounds x live_messages_per_round) and the same subscription alone on a fresh bus, interleaved; \
    baseline: an unbounded tokio mpsc of Bytes nobody receives from",
        "subscriptions": subscriptions,
        "payload": payload,
        "backlog": backlog,
    });
    line.to_string()
}

/// A child process: one side of one point (see [`run`]).
pub async fn point(args: &[String]) -> String {
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok()).expect("local_scaling_point: missing number");
    let side = args.get(1).map(String::as_str).unwrap_or_default();
    match (args.first().map(String::as_str).unwrap_or_default(), side) {
        ("subs", _) => {
            let (k, n) = (num(2) as usize, num(3));
            fanout_side(side, k, n, &SUBS, event).await
        }
        ("payload", _) => {
            let (bytes, n) = (num(2) as usize, num(3));
            fanout_side(side, 1, n, &PAYLOAD, blob_maker(bytes)).await
        }
        ("backlog", "tidings") => backlog_tidings(num(2), num(3), num(4) as usize).await,
        ("backlog", "baseline") => backlog_baseline(num(2)).await,
        _ => panic!("local_scaling_point: unknown point {args:?}"),
    }
}

async fn fanout_side<T>(side: &str, k: usize, n: u64, topic: &'static Topic<T>, make: impl Fn(u64) -> T) -> String
where
    T: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let payload = serde_json::to_vec(&make(n / 2)).unwrap().len();
    // A warm-up run first (the first run in a process pays for warming the heap and the worker threads); its
    // memory is smaller than the measured run's, so the process's peak is the measured run's.
    let warm = (n / 10).clamp(1_000, 20_000);
    let faults;
    let (publish, deliveries) = if side == "tidings" {
        tidings_fanout_of(topic, k, warm, &make).await;
        faults = minor_faults();
        let (p, d, _) = tidings_fanout_of(topic, k, n, &make).await;
        (p, d)
    } else {
        baseline_fanout_of(k, warm, &make).await;
        faults = minor_faults();
        (f64::NAN, baseline_fanout_of(k, n, &make).await.0)
    };
    // Memory touched for the first time (fresh pages from the kernel) per message published, in the measured run.
    let faults = (minor_faults() - faults) as f64 / n as f64;
    let publish = if publish.is_nan() { "null".to_string() } else { format!("{publish:.0}") };
    format!(
        "{{\"side\":\"{side}\",\"subscriptions\":{k},\"messages\":{n},\"payload_bytes\":{payload},\
         \"deliveries_per_s\":{deliveries:.0},\"publish_msgs_per_s\":{publish},\"page_faults_per_msg\":{faults:.2},\
         \"peak_rss_mb\":{:.1}}}",
        mb(peak_rss())
    )
}

/// Fills a stalled subscription with `queued` messages, then measures a live subscription beside it.
async fn backlog_tidings(queued: u64, m: u64, rounds: usize) -> String {
    // The bus's default backlog limit raised, and the stalled subscription's own: the backlog must grow unbounded.
    let mut config = LocalConfig::default();
    config.max_backlog = u64::MAX;
    let bus = Bus::new(Arc::new(LocalBackend::with_config(config)));
    let stalled = SubscriptionConfig::default().with_max_concurrency(1).with_max_backlog(u64::MAX);
    bus.subscribe(&BACKLOG, "stalled", stalled, |_m: Message<Event>| {
        std::future::pending::<tidings_core::HandlerResult>()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (before, faults, start) = (rss(), minor_faults(), std::time::Instant::now());
    for i in 0..queued {
        BACKLOG.publish(&bus, &event(i)).await.unwrap();
    }
    let fill = queued as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_msg = rss().saturating_sub(before) as f64 / queued as f64;
    let faults_per_1k = (minor_faults() - faults) as f64 * 1000.0 / queued as f64;
    // The live subscription alone, on a bus of its own, created after the fill: memory it frees is not reused by the
    // backlog, which would hide part of the backlog's RSS growth. A warm-up round first: the first run in a process
    // pays for warming the heap and the worker threads.
    let mut alone = Live::new(Bus::new(Arc::new(LocalBackend::new())), &BACKLOG).await;
    alone.rate(m).await;
    let mut beside = Live::new(bus.clone(), &BACKLOG).await;
    beside.offset = queued;
    let (mut alones, mut besides, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = alone.rate(m).await;
            (a, beside.rate(m).await)
        } else {
            let b = beside.rate(m).await;
            (alone.rate(m).await, b)
        };
        alones.push(a);
        besides.push(b);
        ratios.push(b / a);
    }
    let payload = serde_json::to_vec(&event(0)).unwrap().len();
    let after = queued + m * rounds as u64;
    // No shutdown: the process exits, and dropping 10 M messages one by one would only cost time.
    format!(
        "{{\"queued\":{queued},\"queued_after_live_rounds\":{after},\"payload_bytes\":{payload},\
         \"bytes_per_queued_msg\":{per_msg:.0},\"fill_msgs_per_s\":{fill:.0},\"fill_page_faults_per_1k\":{faults_per_1k:.0},\
         \"live_messages_per_round\":{m},\"live_rounds\":{rounds},\"live_msgs_per_s_beside_backlog\":{:.0},\
         \"live_msgs_per_s_alone\":{:.0},\"live_ratio\":{:.2},\"peak_rss_mb\":{:.1}}}",
        median(&mut besides),
        median(&mut alones),
        median(&mut ratios),
        mb(peak_rss())
    )
}

/// The baseline's backlog: `queued` encoded messages in an unbounded mpsc nobody receives from.
async fn backlog_baseline(queued: u64) -> String {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (before, start) = (rss(), std::time::Instant::now());
    for i in 0..queued {
        tx.send(Bytes::from(serde_json::to_vec(&event(i)).unwrap())).unwrap();
    }
    let fill = queued as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_msg = rss().saturating_sub(before) as f64 / queued as f64;
    std::hint::black_box(&rx);
    format!(
        "{{\"queued\":{queued},\"bytes_per_queued_msg\":{per_msg:.0},\"fill_msgs_per_s\":{fill:.0},\"peak_rss_mb\":{:.1}}}",
        mb(peak_rss())
    )
}
