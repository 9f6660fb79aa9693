//! Deliveries/s, publish-to-handler p99 and server round trips per 1,000 messages, tidings against a hand-written
//! async-nats loop (publish, pull, ack) in the same run, against the NATS server on 127.0.0.1:4222.
//!
//! Run: `cargo bench -p tidings-nats --bench roundtrips` (`-- --messages N` to change the count). Prints one JSON
//! object. Both sides publish from 20 concurrent tasks, each awaiting its stream ack, as request handlers would.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tidings_core::{Bus, Message, SubscriptionConfig, Topic, TopicConfig};
use tidings_nats::{NatsBackend, NatsConfig};

const PUBLISHERS: u64 = 20;

#[derive(Serialize, Deserialize)]
struct Event {
    n: u64,
    /// Microseconds since the epoch, for the raw loop's latency (tidings carries the publish time itself).
    at: u64,
    email: String,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn p99(mut v: Vec<u64>) -> f64 {
    v.sort_unstable();
    v.get(v.len() * 99 / 100).copied().unwrap_or(0) as f64 / 1000.0
}

struct Run {
    publish_per_s: f64,
    per_s: f64,
    p99_ms: f64,
    round_trips_per_1000: f64,
}

async fn tidings(n: u64) -> Run {
    let backend = NatsBackend::new(NatsConfig::default()).await.expect("a NATS server on 127.0.0.1:4222");
    let bus = Bus::new(Arc::new(backend.clone()));
    let id = uuid::Uuid::now_v7().simple().to_string();
    let topic: Topic<Event> =
        Topic::new(Box::leak(format!("bench-{}", &id[20..]).into_boxed_str()), TopicConfig::at_least_once());
    let (done, lat) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::with_capacity(n as usize))));
    let (d, l) = (done.clone(), lat.clone());
    let sub = bus
        .subscribe(&topic, "bench", SubscriptionConfig::default(), move |m: Message<Event>| {
            let us = m.meta.publish_time.elapsed().unwrap_or_default().as_micros() as u64;
            l.lock().unwrap().push(us);
            d.fetch_add(1, SeqCst);
            async { Ok(()) }
        })
        .await
        .unwrap();
    let before = backend.round_trips().total();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..PUBLISHERS {
        let (bus, topic) = (bus.clone(), Topic::<Event>::new(topic.name(), topic.config()));
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(PUBLISHERS as usize) {
                topic
                    .publish(&bus, &Event { n: i, at: now_us(), email: format!("user{i}@example.com") })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let published = start.elapsed();
    while done.load(SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    let trips = backend.round_trips().total() - before;
    sub.shutdown(Duration::from_secs(5)).await;
    let lat = std::mem::take(&mut *lat.lock().unwrap());
    Run {
        publish_per_s: n as f64 / published.as_secs_f64(),
        per_s: n as f64 / elapsed.as_secs_f64(),
        p99_ms: p99(lat),
        round_trips_per_1000: trips as f64 * 1000.0 / n as f64,
    }
}

/// The loop an application would write by hand: a stream, a durable pull consumer, publish with ack, fetch up to 100,
/// ack each.
async fn raw(n: u64) -> Run {
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("rawbench-{}", &id[20..]);
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let trips = Arc::new(AtomicU64::new(0));
    let (lat, t) = (Arc::new(Mutex::new(Vec::with_capacity(n as usize))), trips.clone());
    let l = lat.clone();
    let consume = tokio::spawn(async move {
        let mut got = 0;
        while got < n {
            t.fetch_add(1, SeqCst);
            let mut batch = consumer.fetch().max_messages(100).messages().await.unwrap();
            let mut any = false;
            while let Some(Ok(m)) = batch.next().await {
                let e: Event = serde_json::from_slice(&m.payload).unwrap();
                l.lock().unwrap().push(now_us().saturating_sub(e.at));
                m.ack().await.unwrap();
                got += 1;
                any = true;
            }
            if !any {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..PUBLISHERS {
        let (js, name, trips) = (js.clone(), name.clone(), trips.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(PUBLISHERS as usize) {
                let e = Event { n: i, at: now_us(), email: format!("user{i}@example.com") };
                trips.fetch_add(1, SeqCst);
                js.publish(format!("{name}.m"), serde_json::to_vec(&e).unwrap().into()).await.unwrap().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let published = start.elapsed();
    consume.await.unwrap();
    let elapsed = start.elapsed();
    let _ = js.delete_stream(&name).await;
    let lat = std::mem::take(&mut *lat.lock().unwrap());
    Run {
        publish_per_s: n as f64 / published.as_secs_f64(),
        per_s: n as f64 / elapsed.as_secs_f64(),
        p99_ms: p99(lat),
        round_trips_per_1000: trips.load(SeqCst) as f64 * 1000.0 / n as f64,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 =
        args.iter().position(|a| a == "--messages").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(10_000);
    let r = raw(n).await;
    let t = tidings(n).await;
    println!(
        "{{\"bench\":\"nats_roundtrips\",\"messages\":{n},\"publishers\":{PUBLISHERS},\"tidings_publish_per_s\":{:.0},\
         \"raw_publish_per_s\":{:.0},\"tidings_deliveries_per_s\":{:.0},\
         \"raw_deliveries_per_s\":{:.0},\"vs_raw\":{:.2},\"tidings_p99_ms\":{:.1},\"raw_p99_ms\":{:.1},\
         \"tidings_round_trips_per_1000\":{:.0},\"raw_round_trips_per_1000\":{:.0},\"note\":\"nats-server on the same 2 cores\"}}",
        t.publish_per_s,
        r.publish_per_s,
        t.per_s,
        r.per_s,
        t.per_s / r.per_s,
        t.p99_ms,
        r.p99_ms,
        t.round_trips_per_1000,
        r.round_trips_per_1000
    );
}
