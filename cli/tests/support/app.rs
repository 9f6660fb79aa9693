//! The application side of the CLI tests, run in a child process (`Env::app`): `seed` publishes orders whose
//! handler dead-letters two kinds with two reasons (`seed-declined`: the declined ones alone); `handle:N` handles messages until N arrived and prints their
//! payloads' `n`; `topology` subscribes and prints the bus's topology as JSON; `declare:a,b` subscribes `a` and `b` to
//! orders (their resources provisioned) and exits.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings::{HandlerError, Message, SubscriptionConfig, Topic, TopicConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub n: u32,
    pub kind: String,
}

pub static ORDERS: Topic<Order> = Topic::new("orders", TopicConfig::at_least_once());

/// 3 declined cards, 2 invalid totals, 1 good order.
pub const SEEDED: [(u32, &str); 6] =
    [(1, "declined"), (2, "declined"), (3, "declined"), (4, "invalid"), (5, "invalid"), (6, "ok")];

/// Entry point of the child process.
pub fn main(mode: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let bus = tidings::from_env().await.expect("bus");
        let config = SubscriptionConfig::default().with_max_retries(0).with_ack_deadline(Duration::from_secs(20));
        if mode == "seed" || mode == "seed-declined" {
            let sub = bus
                .subscribe(&ORDERS, "billing", config, |m: Message<Order>| async move {
                    match m.kind.as_str() {
                        "declined" => Err(HandlerError::unrecoverable("card declined")),
                        "invalid" => Err(HandlerError::unrecoverable(format!("invalid total in order {}", m.n))),
                        _ => Ok(()),
                    }
                })
                .await
                .expect("subscribe");
            let seeded: Vec<_> = SEEDED.iter().filter(|(_, k)| mode == "seed" || *k == "declined").collect();
            for (n, kind) in &seeded {
                ORDERS.publish(&bus, &Order { n: *n, kind: kind.to_string() }).await.expect("publish");
            }
            let dead = seeded.iter().filter(|(_, k)| *k != "ok").count();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while sub.dead_letters(100).await.unwrap().len() < dead {
                assert!(tokio::time::Instant::now() < deadline, "the seeded orders were not dead-lettered");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            println!("seeded");
        } else if mode == "topology" {
            let _sub = bus
                .subscribe(&ORDERS, "billing", config, |_: Message<Order>| async { Ok(()) })
                .await
                .expect("subscribe");
            println!("\nTOPOLOGY {}", serde_json::to_string(&bus.topology()).unwrap());
        } else if let Some(names) = mode.strip_prefix("declare:") {
            let mut subs = Vec::new();
            for name in names.split(',') {
                let handler = |_: Message<Order>| async { Ok(()) };
                subs.push(bus.subscribe(&ORDERS, name, config, handler).await.expect("subscribe"));
            }
            println!("declared {names}");
        } else if let Some(n) = mode.strip_prefix("handle:") {
            let want: usize = n.parse().unwrap();
            let seen = Arc::new(Mutex::new(BTreeSet::new()));
            let s = seen.clone();
            let _sub = bus
                .subscribe(&ORDERS, "billing", config, move |m: Message<Order>| {
                    let s = s.clone();
                    async move {
                        s.lock().unwrap().insert(m.n);
                        Ok(())
                    }
                })
                .await
                .expect("subscribe");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while seen.lock().unwrap().len() < want {
                assert!(tokio::time::Instant::now() < deadline, "only handled {:?}", seen.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let handled: Vec<String> = seen.lock().unwrap().iter().map(|n| n.to_string()).collect();
            println!("handled {}", handled.join(","));
        }
        bus.shutdown(Duration::from_secs(5)).await;
    });
    rt.shutdown_timeout(Duration::from_secs(2));
}
