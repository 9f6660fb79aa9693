//! The runtime's sequencer against a broker without native ordering (a fake driver that hands out every available
//! message in publish order, whatever of its key is out, and takes back a delivery whose lease ran out), on tokio's
//! paused clock: a retried head blocks its key, a dead-lettered head releases the next, parked messages' leases are
//! extended (none runs out), and other keys run meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::start;
use crate::backend::TopicSpec;
use crate::backend::{AckId, Capabilities, DeadLetterRequest, ReceivedMessage, SubscriptionDriver, SubscriptionSpec};
use crate::{HandlerError, Message, Result, RetryPolicy, SubscriptionConfig, TopicConfig};

const ACK_DEADLINE: Duration = Duration::from_secs(1);

/// One published message and its state at the fake broker.
struct Stored {
    id: &'static str,
    key: &'static str,
    attempts: u32,
    available_at: Instant,
    /// The delivery out: its token and when its lease ends.
    out: Option<(u64, Instant)>,
}

#[derive(Default)]
struct State {
    msgs: Vec<Stored>,
    next_token: u64,
    /// Lease extensions per message id.
    extended: HashMap<&'static str, usize>,
    /// Deliveries whose lease ran out.
    lapsed: Vec<&'static str>,
    acked: Vec<&'static str>,
    dead: Vec<&'static str>,
}

/// A broker without native ordering (as NATS JetStream or Pub/Sub hand out an ordered key's messages).
#[derive(Default)]
struct Unordered {
    st: Mutex<State>,
}

impl std::fmt::Debug for Unordered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unordered")
    }
}

impl Unordered {
    fn publish(&self, id: &'static str, key: &'static str) {
        let mut st = self.st.lock().unwrap();
        st.msgs.push(Stored { id, key, attempts: 0, available_at: Instant::now(), out: None });
    }

    fn take(&self, max: usize) -> Vec<ReceivedMessage> {
        let mut st = self.st.lock().unwrap();
        let now = Instant::now();
        let mut lapsed = Vec::new();
        for m in st.msgs.iter_mut().filter(|m| m.out.is_some_and(|(_, end)| end <= now)) {
            (m.out, m.available_at) = (None, now);
            lapsed.push(m.id);
        }
        st.lapsed.extend(lapsed);
        let mut out = Vec::new();
        let mut token = st.next_token;
        for m in st.msgs.iter_mut().filter(|m| m.out.is_none() && m.available_at <= now).take(max) {
            token += 1;
            m.attempts += 1;
            m.out = Some((token, now + ACK_DEADLINE));
            let payload = Bytes::from(format!("{:?}", m.id));
            out.push(
                ReceivedMessage::new(AckId::Num(token), m.id.into(), payload, SystemTime::now(), m.attempts)
                    .with_ordering_key(Some(m.key.into())),
            );
        }
        st.next_token = token;
        out
    }

    /// The message whose delivery `token` is out.
    fn find<'a>(st: &'a mut State, id: &AckId) -> Option<&'a mut Stored> {
        let AckId::Num(t) = id else { return None };
        st.msgs.iter_mut().find(|m| m.out.is_some_and(|(token, _)| token == *t))
    }

    fn remove(&self, ids: &[AckId], dead: bool) {
        let mut st = self.st.lock().unwrap();
        for id in ids {
            let Some(m) = Self::find(&mut st, id) else { continue };
            let name = m.id;
            st.msgs.retain(|m| m.id != name);
            if dead {
                st.dead.push(name)
            } else {
                st.acked.push(name)
            }
        }
    }
}

#[async_trait]
impl SubscriptionDriver for Unordered {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let until = Instant::now() + wait;
        loop {
            let got = self.take(max);
            if !got.is_empty() || Instant::now() >= until {
                return Ok(got);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
        self.remove(&ids, false);
        Ok(())
    }
    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()> {
        let mut st = self.st.lock().unwrap();
        for (id, delay) in items {
            if let Some(m) = Self::find(&mut st, &id) {
                (m.out, m.available_at) = (None, Instant::now() + delay);
            }
        }
        Ok(())
    }
    async fn extend_lease(&self, ids: Vec<AckId>, by: Duration) -> Result<()> {
        let mut st = self.st.lock().unwrap();
        for id in ids {
            if let Some(m) = Self::find(&mut st, &id) {
                let token = m.out.expect("out").0;
                m.out = Some((token, Instant::now() + by));
                let name = m.id;
                *st.extended.entry(name).or_default() += 1;
            }
        }
        Ok(())
    }
    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()> {
        let ids: Vec<AckId> = items.into_iter().map(|r| r.message.ack_id).collect();
        self.remove(&ids, true);
        Ok(())
    }
}

/// What the handler saw: (message, attempt, start, end), in the order handlers started.
type Seen = Arc<Mutex<Vec<(String, u32, Instant, Instant)>>>;

/// Runs a1 a2 b1 a3 b2 (keys a and b) on an ordered topic of a backend with `caps`: a1 runs for three ack deadlines
/// and fails once, a2 fails for good, the rest succeed after 50 ms. Returns what the handler saw, whether two
/// messages of a key ever ran at once, and the broker.
async fn run(caps: Capabilities) -> (Seen, bool, Arc<Unordered>) {
    let broker = Arc::new(Unordered::default());
    for (id, key) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("a3", "a"), ("b2", "b")] {
        broker.publish(id, key);
    }
    let topic = TopicSpec::new("t", "t", TopicConfig::at_least_once().ordered());
    let retry = RetryPolicy::new(Duration::from_millis(200), Duration::from_millis(200)).with_max_retries(5);
    let config = SubscriptionConfig::default().with_max_concurrency(4).with_ack_deadline(ACK_DEADLINE);
    let spec = SubscriptionSpec::new(topic, "s", "s", config.with_retry(retry));
    let (seen, overlap): (Seen, _) = (Seen::default(), Arc::new(AtomicBool::new(false)));
    let running: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (s, o, r) = (seen.clone(), overlap.clone(), running.clone());
    let handler = move |m: Message<String>| {
        let (s, o, r) = (s.clone(), o.clone(), r.clone());
        async move {
            let key = m.ordering_key().unwrap().to_string();
            let n = r.lock().unwrap().entry(key.clone()).and_modify(|n| *n += 1).or_insert(1).to_owned();
            o.fetch_or(n > 1, SeqCst);
            let start = Instant::now();
            let first_a1 = m.payload == "a1" && m.attempt() == 1;
            tokio::time::sleep(if first_a1 { ACK_DEADLINE * 3 } else { Duration::from_millis(50) }).await;
            *r.lock().unwrap().get_mut(&key).unwrap() -= 1;
            s.lock().unwrap().push((m.payload.clone(), m.attempt(), start, Instant::now()));
            match m.payload.as_str() {
                "a1" if first_a1 => Err(HandlerError::retry("transient")),
                "a2" => Err(HandlerError::unrecoverable("bad")),
                _ => Ok(()),
            }
        }
    };
    let runner =
        start(&crate::backend::BackendInfo::new("test"), ("t".into(), "s".into()), spec, broker.clone(), caps, handler);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !broker.st.lock().unwrap().msgs.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runner.wait(Duration::from_secs(5)).await;
    (seen, overlap.load(SeqCst), broker)
}

fn check(seen: &Seen, overlap: bool, broker: &Unordered) {
    let seen = seen.lock().unwrap();
    let order = |key: char| -> Vec<(String, u32)> {
        seen.iter().filter(|(id, ..)| id.starts_with(key)).map(|(id, a, ..)| (id.clone(), *a)).collect()
    };
    let at = |id: &str, attempt: u32| seen.iter().find(|(i, a, ..)| i == id && *a == attempt).unwrap().clone();
    assert_eq!(
        order('a'),
        vec![("a1".into(), 1), ("a1".into(), 2), ("a2".into(), 1), ("a3".into(), 1)],
        "key a: the retried a1 blocks its key, and the dead-lettered a2 releases a3"
    );
    assert_eq!(order('b'), vec![("b1".into(), 1), ("b2".into(), 1)]);
    assert!(!overlap, "two messages of one key never ran at once");
    let (a1, b2) = (at("a1", 1), at("b2", 1));
    assert!(b2.3 <= a1.3, "key b ran to its end while a1's first attempt ran");
    assert!(at("a2", 1).2 >= at("a1", 2).3, "a2 waited for a1's retry to be acked");
    assert!(at("a3", 1).2 >= at("a2", 1).3, "a3 waited for a2 to be dead-lettered");
    let st = broker.st.lock().unwrap();
    assert!(st.lapsed.is_empty(), "no lease ran out: {:?}", st.lapsed);
    for parked in ["a2", "a3"] {
        assert!(st.extended.get(parked).is_some_and(|n| *n >= 2), "{parked}'s lease kept alive: {:?}", st.extended);
    }
    assert_eq!(st.dead, vec!["a2"]);
    let mut acked = st.acked.clone();
    acked.sort();
    assert_eq!(acked, vec!["a1", "a3", "b1", "b2"]);
}

/// Runs the story on a backend without native ordering, with or without nack delay, and checks it.
async fn story(nack_delay: bool) {
    let mut caps = Capabilities::default();
    (caps.ordering, caps.nack_delay) = (false, nack_delay);
    let (seen, overlap, broker) = run(caps).await;
    check(&seen, overlap, &broker);
}

#[tokio::test(start_paused = true)]
async fn a_key_runs_one_message_at_a_time_on_a_broker_without_native_ordering() {
    story(true).await;
}

/// Without nack delay the runtime holds a1 for its backoff (lease kept alive), then nacks it: the same order.
#[tokio::test(start_paused = true)]
async fn a_key_runs_one_message_at_a_time_without_nack_delay_either() {
    story(false).await;
}
