//! The in-memory bus against a raw-tokio baseline and omniqueue's in-memory backend, same work, same run.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use tidings_core::{Bus, Message, SubscriptionConfig, Topic, TopicConfig};
use tidings_local::LocalBackend;

use crate::util::{context_switches, cpu_seconds, event, mb, minor_faults, peak_rss, reset_peak, rss, Event};

static FANOUT: Topic<Event> = Topic::new("fanout", TopicConfig::at_least_once());

pub(crate) async fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Relaxed) < target {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

pub(crate) fn counting<T>(
    done: &Arc<AtomicU64>,
) -> impl Fn(Message<T>) -> std::future::Ready<tidings_core::HandlerResult> + Send + Sync + 'static {
    let done = done.clone();
    move |m: Message<T>| {
        std::hint::black_box(&m.payload);
        done.fetch_add(1, Relaxed);
        std::future::ready(Ok(()))
    }
}

/// (publish msgs/s, deliveries/s, peak RSS MB)
async fn tidings_fanout(k: usize, n: u64) -> (f64, f64, f64) {
    tidings_fanout_of(&FANOUT, k, n, event).await
}

/// [`tidings_fanout`] of any payload: `make(i)` builds the i-th message.
pub(crate) async fn tidings_fanout_of<T>(
    topic: &'static Topic<T>,
    k: usize,
    n: u64,
    make: impl Fn(u64) -> T,
) -> (f64, f64, f64)
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    reset_peak();
    let bus = Bus::new(Arc::new(LocalBackend::new()));
    let done = Arc::new(AtomicU64::new(0));
    for i in 0..k {
        bus.subscribe(topic, &format!("sub{i}"), SubscriptionConfig::default(), counting(&done)).await.unwrap();
    }
    let start = Instant::now();
    for i in 0..n {
        topic.publish(&bus, &make(i)).await.unwrap();
    }
    let published = start.elapsed().as_secs_f64();
    wait_for(&done, n * k as u64).await;
    let all = start.elapsed().as_secs_f64();
    let peak = mb(peak_rss());
    bus.shutdown(Duration::from_secs(5)).await;
    (n as f64 / published, (n * k as u64) as f64 / all, peak)
}

/// The practical limit of this design: serialize once into `Bytes`, one bounded mpsc per subscriber, decode, count.
async fn baseline_fanout(k: usize, n: u64) -> (f64, f64) {
    baseline_fanout_of::<Event>(k, n, event).await
}

/// [`baseline_fanout`] of any payload: `make(i)` builds the i-th message. (deliveries/s, peak RSS MB)
pub(crate) async fn baseline_fanout_of<T>(k: usize, n: u64, make: impl Fn(u64) -> T) -> (f64, f64)
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    reset_peak();
    let done = Arc::new(AtomicU64::new(0));
    let mut txs = Vec::new();
    for _ in 0..k {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
        let d = done.clone();
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                let e: T = serde_json::from_slice(&b).unwrap();
                std::hint::black_box(&e);
                d.fetch_add(1, Relaxed);
            }
        });
        txs.push(tx);
    }
    let start = Instant::now();
    for i in 0..n {
        let b = Bytes::from(serde_json::to_vec(&make(i)).unwrap());
        for tx in &txs {
            tx.send(b.clone()).await.unwrap();
        }
    }
    wait_for(&done, n * k as u64).await;
    ((n * k as u64) as f64 / start.elapsed().as_secs_f64(), mb(peak_rss()))
}

/// omniqueue's in-memory backend as its users would use it: no fan-out, so one queue per subscriber and a publish to
/// each.
async fn omniqueue_fanout(k: usize, n: u64) -> (f64, f64) {
    use omniqueue::backends::InMemoryBackend;
    reset_peak();
    let done = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for _ in 0..k {
        let (p, mut c) = InMemoryBackend::builder().build_pair().await.unwrap();
        let d = done.clone();
        tokio::spawn(async move {
            loop {
                let Ok(delivery) = c.receive().await else { return };
                let e: Option<Event> = delivery.payload_serde_json().unwrap();
                std::hint::black_box(&e);
                let _ = delivery.ack().await;
                d.fetch_add(1, Relaxed);
            }
        });
        producers.push(p);
    }
    let start = Instant::now();
    for i in 0..n {
        let e = event(i);
        for p in &producers {
            p.send_serde_json(&e).await.unwrap();
        }
    }
    wait_for(&done, n * k as u64).await;
    ((n * k as u64) as f64 / start.elapsed().as_secs_f64(), mb(peak_rss()))
}

fn with_no_publish_rate((deliveries, rss): (f64, f64)) -> (f64, f64, f64) {
    (0.0, deliveries, rss)
}

/// Runs of each side per fan-out benchmark.
const ROUNDS: usize = 3;

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn fanout(k: usize, n: u64) -> String {
    if std::env::var("TIDINGS_BENCH_PROFILE").is_ok() {
        // Profiling aid: one side only, tidings unless `TIDINGS_BENCH_SIDE` names `baseline` or `omniqueue` (the
        // callgrind step counts each side's instructions per message).
        let side = std::env::var("TIDINGS_BENCH_SIDE").unwrap_or_else(|_| "tidings".into());
        let (p, d, r) = match side.as_str() {
            "tidings" => tidings_fanout(k, n).await,
            // These two report no publish rate of their own (0).
            "baseline" => with_no_publish_rate(baseline_fanout(k, n).await),
            "omniqueue" => with_no_publish_rate(omniqueue_fanout(k, n).await),
            other => panic!("TIDINGS_BENCH_SIDE={other:?}: expected tidings, baseline or omniqueue"),
        };
        return format!(
            "{{\"bench\":\"local_fanout{k}_profile\",\"side\":\"{side}\",\"publish\":{p:.0},\"deliveries\":{d:.0},\"rss\":{r:.1}}}"
        );
    }
    // Rounds interleave the three, and each figure is the median of its rounds: this machine's speed drifts by tens
    // of percent between runs, and the drift should hit all three alike. Peak RSS is from the first round, before any
    // run has grown the heap.
    let (mut bases, mut omnis, mut publishes, mut deliveries_) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut base_rss, mut omni_rss, mut peak) = (0.0, 0.0, 0.0);
    // CPU time (all threads) and context switches per delivery, per side: [tidings, baseline, omniqueue].
    // And cores busy (CPU time over wall time).
    let (mut cpu, mut switches, mut busy) =
        ([vec![], vec![], vec![]], [vec![], vec![], vec![]], [vec![], vec![], vec![]]);
    let deliveries_per_run = (n * k as u64) as f64;
    let mut costs = |side: usize, (c0, s0, t0): (f64, u64, Instant)| {
        let used = cpu_seconds() - c0;
        cpu[side].push(used * 1e6 / deliveries_per_run);
        switches[side].push((context_switches() - s0) as f64 * 1000.0 / deliveries_per_run);
        busy[side].push(used / t0.elapsed().as_secs_f64());
    };
    let mark = || (cpu_seconds(), context_switches(), Instant::now());
    for round in 0..ROUNDS {
        let m = mark();
        let (b, b_rss) = baseline_fanout(k, n).await;
        costs(1, m);
        let m = mark();
        let (o, o_rss) = omniqueue_fanout(k, n).await;
        costs(2, m);
        let m = mark();
        let (p, d, t_rss) = tidings_fanout(k, n).await;
        costs(0, m);
        if round == 0 {
            (base_rss, omni_rss, peak) = (b_rss, o_rss, t_rss);
        }
        bases.push(b);
        omnis.push(o);
        publishes.push(p);
        deliveries_.push(d);
    }
    let (base, omni, publish, deliveries) =
        (median(&mut bases), median(&mut omnis), median(&mut publishes), median(&mut deliveries_));
    let rounds = ROUNDS;
    let [cpu_t, cpu_b, cpu_o] = cpu.map(|mut v| median(&mut v));
    let [cs_t, cs_b, cs_o] = switches.map(|mut v| median(&mut v));
    let [busy_t, busy_b, busy_o] = busy.map(|mut v| median(&mut v));
    format!(
        "{{\"bench\":\"local_fanout{k}\",\"messages\":{n},\"subscriptions\":{k},\"rounds\":{rounds},\"tidings_publish_msgs_per_s\":{publish:.0},\
         \"tidings_msgs_per_s\":{deliveries:.0},\"baseline_msgs_per_s\":{base:.0},\"omniqueue_msgs_per_s\":{omni:.0},\
         \"vs_baseline\":{:.2},\"vs_omniqueue\":{:.2},\"tidings_peak_rss_mb\":{peak:.1},\"baseline_peak_rss_mb\":{base_rss:.1},\
         \"omniqueue_peak_rss_mb\":{omni_rss:.1},\"tidings_cpu_us_per_delivery\":{cpu_t:.2},\"baseline_cpu_us_per_delivery\":{cpu_b:.2},\
         \"omniqueue_cpu_us_per_delivery\":{cpu_o:.2},\"tidings_switches_per_1k\":{cs_t:.1},\"baseline_switches_per_1k\":{cs_b:.1},\
         \"omniqueue_switches_per_1k\":{cs_o:.1},\"tidings_cores_busy\":{busy_t:.2},\"baseline_cores_busy\":{busy_b:.2},\
         \"omniqueue_cores_busy\":{busy_o:.2},\"omniqueue_note\":\"no fan-out: one queue per subscriber, published to each\"}}",
        deliveries / base,
        deliveries / omni
    )
}

/// Profiling aid (`TIDINGS_BENCH_PROFILE=1 tidings-bench local_publish_only`, for `scripts/bench`'s callgrind step):
/// [`tidings_fanout`]'s publishes alone, on the same topic with one subscription that takes nothing (stalled, no backlog
/// limit), so each publish still encodes and stores its copy, and nothing is delivered.
pub async fn publish_only(n: u64) -> String {
    let bus = Bus::new(Arc::new(LocalBackend::new()));
    let stalled = SubscriptionConfig::default().with_max_concurrency(1).with_max_backlog(u64::MAX);
    bus.subscribe(&FANOUT, "sub0", stalled, |_m: Message<Event>| std::future::pending::<tidings_core::HandlerResult>())
        .await
        .unwrap();
    let start = Instant::now();
    for i in 0..n {
        FANOUT.publish(&bus, &event(i)).await.unwrap();
    }
    let p = n as f64 / start.elapsed().as_secs_f64();
    bus.shutdown(Duration::from_millis(100)).await;
    format!("{{\"bench\":\"local_publish_only_profile\",\"messages\":{n},\"publish\":{p:.0}}}")
}

static LATENCY: Topic<Event> = Topic::new("latency", TopicConfig::at_least_once());

/// The baseline at the same offered load, for its peak RSS while the consumer keeps up.
async fn baseline_paced(secs: u64) -> f64 {
    reset_peak();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let consumer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            let e: Event = serde_json::from_slice(&b).unwrap();
            std::hint::black_box(&e);
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..secs * 1000 {
        tick.tick().await;
        for j in 0..50 {
            tx.send(Bytes::from(serde_json::to_vec(&event(i * 50 + j)).unwrap())).await.unwrap();
        }
    }
    drop(tx);
    consumer.await.unwrap();
    mb(peak_rss())
}

/// Publish-to-handler latency at 50,000 msgs/s offered for `secs` seconds (50 messages every millisecond), and peak
/// RSS at that load (consumers keep up) beside the baseline's.
pub async fn latency(secs: u64) -> String {
    let baseline_rss = baseline_paced(secs.min(3)).await;
    reset_peak();
    let bus = Bus::new(Arc::new(LocalBackend::new()));
    let origin = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::with_capacity(50_000 * secs as usize)));
    let s = samples.clone();
    bus.subscribe(&LATENCY, "sub", SubscriptionConfig::default(), move |m: Message<Event>| {
        let now = origin.elapsed().as_nanos() as u64;
        s.lock().unwrap().push(now.saturating_sub(m.ts) / 1000);
        std::future::ready(Ok(()))
    })
    .await
    .unwrap();
    let total = 50_000 * secs;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        for _ in 0..50 {
            let mut e = event(sent);
            e.ts = origin.elapsed().as_nanos() as u64;
            LATENCY.publish(&bus, &e).await.unwrap();
            sent += 1;
        }
    }
    while samples.lock().unwrap().len() < total as usize {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let peak = mb(peak_rss());
    bus.shutdown(Duration::from_secs(5)).await;
    let mut v = samples.lock().unwrap().clone();
    v.sort_unstable();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "{{\"bench\":\"local_latency\",\"offered_msgs_per_s\":50000,\"seconds\":{secs},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\
         \"tidings_peak_rss_mb\":{peak:.1},\"baseline_peak_rss_mb\":{baseline_rss:.1}}}",
        p(0.5),
        p(0.99),
        p(0.999)
    )
}

static BACKLOG: Topic<Event> = Topic::new("backlog", TopicConfig::at_least_once());
/// A topic beside the backlog's, on the same bus.
static UNRELATED: Topic<Event> = Topic::new("unrelated", TopicConfig::at_least_once());

/// Rounds of the live subscription alone and beside the backlog.
const BACKLOG_ROUNDS: usize = 7;

/// A live subscription on a bus, measured round after round.
pub(crate) struct Live {
    pub(crate) bus: Bus,
    topic: &'static Topic<Event>,
    done: Arc<AtomicU64>,
    /// Messages published since the subscription started.
    sent: u64,
    /// Event numbers start here (after the backlog's).
    pub(crate) offset: u64,
}

impl Live {
    pub(crate) async fn new(bus: Bus, topic: &'static Topic<Event>) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        bus.subscribe(topic, "live", SubscriptionConfig::default(), counting(&done)).await.unwrap();
        Live { bus, topic, done, sent: 0, offset: 0 }
    }

    /// Deliveries/s of `m` more messages.
    pub(crate) async fn rate(&mut self, m: u64) -> f64 {
        let (start, faults) = (Instant::now(), minor_faults());
        for i in 0..m {
            self.topic.publish(&self.bus, &event(self.offset + self.sent + i)).await.unwrap();
        }
        self.sent += m;
        wait_for(&self.done, self.sent).await;
        if std::env::var("TIDINGS_BENCH_PROFILE").is_ok() {
            eprintln!("{}: {} page faults per 1,000 messages", self.topic.name(), (minor_faults() - faults) * 1000 / m);
        }
        m as f64 / start.elapsed().as_secs_f64()
    }
}

/// Memory per message queued in a stalled subscription, and a live subscription's throughput beside that backlog
/// (the stalled subscription is on the same topic, so it keeps receiving, and growing, while the live one is measured).
pub async fn backlog(n: u64) -> String {
    let m = (n / 5).max(10_000);
    // A throwaway round first: the first run in a process pays for warming the heap and the worker threads.
    let mut alone = Live::new(Bus::new(Arc::new(LocalBackend::new())), &BACKLOG).await;
    alone.rate(m).await;
    let bus = Bus::new(Arc::new(LocalBackend::new()));
    // No backlog limit: this bench measures what each queued message costs, so the backlog must grow unbounded.
    let stalled = SubscriptionConfig::default().with_max_concurrency(1).with_max_backlog(u64::MAX);
    bus.subscribe(&BACKLOG, "stalled", stalled, |_m: Message<Event>| {
        std::future::pending::<tidings_core::HandlerResult>()
    })
    .await
    .unwrap();
    let payload = serde_json::to_vec(&event(0)).unwrap().len() as f64;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rss();
    for i in 0..n {
        BACKLOG.publish(&bus, &event(i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss();
    let per_msg = (after.saturating_sub(before)) as f64 / n as f64;
    // Interleaved rounds; the ratio is the median of each round's ratio, as a round's two runs are close in time and
    // this machine's speed drifts by tens of percent between runs.
    let mut beside = Live::new(bus.clone(), &BACKLOG).await;
    beside.offset = n;
    // The same bus, another topic: the backlog is there but takes no new messages.
    let mut unrelated = Live::new(bus.clone(), &UNRELATED).await;
    let (mut alones, mut besides, mut ratios, mut other_ratios) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..BACKLOG_ROUNDS {
        // Which side goes first alternates, so a drift within a round favours neither.
        let (a, b, u) = if round % 2 == 0 {
            let a = alone.rate(m).await;
            let b = beside.rate(m).await;
            (a, b, unrelated.rate(m).await)
        } else {
            let u = unrelated.rate(m).await;
            let b = beside.rate(m).await;
            (alone.rate(m).await, b, u)
        };
        alones.push(a);
        besides.push(b);
        ratios.push(b / a);
        other_ratios.push(u / a);
    }
    let other_ratio = median(&mut other_ratios);
    if std::env::var("TIDINGS_BENCH_PROFILE").is_ok() {
        eprintln!("alone {alones:.0?}\nbeside {besides:.0?}");
    }
    let (alone_rate, beside_rate, ratio) = (median(&mut alones), median(&mut besides), median(&mut ratios));
    alone.bus.shutdown(Duration::from_secs(5)).await;
    bus.shutdown(Duration::from_millis(100)).await;
    format!(
        "{{\"bench\":\"local_backlog_memory\",\"queued\":{n},\"payload_bytes\":{payload:.0},\"rss_delta_per_msg\":{per_msg:.0},\
         \"bytes_per_queued_msg\":{:.0},\"rounds\":{BACKLOG_ROUNDS},\"live_msgs_per_s_alone\":{alone_rate:.0},\
         \"live_msgs_per_s_beside_backlog\":{beside_rate:.0},\"independence_ratio\":{:.2},\"independence_ratio_other_topic\":{other_ratio:.2}}}",
        per_msg - payload,
        ratio
    )
}
