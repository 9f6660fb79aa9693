//! Input from other producers: an ordered stream published with a cloud's plain SDK (its own group or ordering key,
//! no tidings metadata) must reach an ordered subscription's handler with that key as the ordering key, in order, one
//! message of a key at a time. The backend tests publish with each SDK; the subscription and the checks live here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tidings_core::{Bus, Message, SubscriptionConfig, Topic, TopicConfig};

/// One message of a foreign producer's ordered stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct Step {
    /// The key the producer published it under.
    pub key: String,
    /// Its place in the key's sequence.
    pub n: u32,
}

/// Keys of the stream.
pub const KEYS: [&str; 3] = ["alice", "bob", "carol"];
/// Messages per key.
pub const PER_KEY: u32 = 8;

/// What the handler saw: each message's ordering key and payload, in handling order.
type Seen = Arc<Mutex<Vec<(Option<String>, Step)>>>;

/// An ordered subscription recording what its 30 ms handlers saw (ordering key and payload) and counting two
/// messages of one key running at once.
pub struct OrderedProbe {
    bus: Bus,
    seen: Seen,
    overlaps: Arc<AtomicU32>,
}

impl OrderedProbe {
    /// Subscribes `sub` to the ordered topic `topic` on `bus` (10 handlers, 10 s ack deadline).
    pub async fn subscribe(bus: &Bus, topic: &'static str, sub: &str) -> Self {
        let t = Topic::<Step>::new(topic, TopicConfig::at_least_once().ordered());
        let seen: Seen = Arc::default();
        let running: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let overlaps = Arc::new(AtomicU32::new(0));
        let (s, r, o) = (seen.clone(), running, overlaps.clone());
        let cfg = SubscriptionConfig::DEFAULT.with_ack_deadline(Duration::from_secs(10)).with_max_concurrency(10);
        bus.subscribe(&t, sub, cfg, move |m: Message<Step>| {
            let (s, r, o) = (s.clone(), r.clone(), o.clone());
            async move {
                let key = m.key.clone();
                {
                    let mut r = r.lock().unwrap();
                    let c = r.entry(key.clone()).or_default();
                    *c += 1;
                    if *c > 1 {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                *r.lock().unwrap().get_mut(&key).unwrap() -= 1;
                let ordering_key = m.meta.ordering_key.clone();
                s.lock().unwrap().push((ordering_key, m.into_inner()));
                Ok(())
            }
        })
        .await
        .expect("subscribe the ordered probe");
        Self { bus: bus.clone(), seen, overlaps }
    }

    /// The stream to publish, in order: key, sequence number and JSON body.
    pub fn messages() -> impl Iterator<Item = (&'static str, u32, String)> {
        (0..PER_KEY).flat_map(|n| {
            KEYS.into_iter().map(move |key| (key, n, serde_json::to_string(&Step { key: key.into(), n }).unwrap()))
        })
    }

    /// Waits for the whole stream, shuts the bus down, and checks it: every message handled once, with the producer's
    /// key (`what` names it in the failure) as its ordering key, in publish order, never two of a key at once.
    pub async fn verify(self, what: &str) {
        let total = KEYS.len() * PER_KEY as usize;
        for _ in 0..300 {
            if self.seen.lock().unwrap().len() >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.bus.shutdown(Duration::from_secs(5)).await;
        let seen = self.seen.lock().unwrap();
        assert_eq!(seen.len(), total, "every message handled once");
        for (ordering_key, step) in seen.iter() {
            assert_eq!(ordering_key.as_deref(), Some(step.key.as_str()), "{what} is the ordering key");
        }
        for key in KEYS {
            let ns: Vec<u32> = seen.iter().filter(|(_, s)| s.key == key).map(|(_, s)| s.n).collect();
            assert_eq!(ns, (0..PER_KEY).collect::<Vec<_>>(), "key {key}: handled in publish order");
        }
        assert_eq!(self.overlaps.load(Ordering::SeqCst), 0, "two messages of one key ran at once");
    }
}
