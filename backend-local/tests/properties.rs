//! Property test of the decode path: whatever bytes a foreign producer sends, the message ends either handled or in
//! the DLQ with a reason, exactly once, and the consumer keeps running.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use tidings_core::backend::OutgoingMessage;
use tidings_core::{Bus, Message, MessageId, SubscriptionConfig, Topic, TopicConfig};
use tidings_local::LocalBackend;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
}

static ORDERS: Topic<Order> = Topic::new("orders", TopicConfig::at_least_once());

fn run(payloads: Vec<Vec<u8>>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let bus = Bus::new(Arc::new(LocalBackend::new()));
        let handled = Arc::new(AtomicUsize::new(0));
        let h = handled.clone();
        let sub = bus
            .subscribe(&ORDERS, "sub", SubscriptionConfig::default(), move |_m: Message<Order>| {
                h.fetch_add(1, SeqCst);
                async { Ok(()) }
            })
            .await
            .unwrap();
        let spec = bus.subscription_spec(&ORDERS, "sub", SubscriptionConfig::default()).topic;
        let driver = bus.backend().topic(&spec).await.unwrap();
        let batch: Vec<OutgoingMessage> = payloads
            .iter()
            .map(|p| {
                OutgoingMessage::new(
                    MessageId::generate(),
                    p.clone().into(),
                    Default::default(),
                    None,
                    SystemTime::now(),
                )
            })
            .collect();
        assert!(driver.publish(&batch).await.unwrap().failures().is_empty());
        prop_assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap(), "everything settled");
        let dead = sub.dead_letters(usize::MAX).await.unwrap();
        let valid = payloads.iter().filter(|p| serde_json::from_slice::<Order>(p).is_ok()).count();
        prop_assert_eq!(handled.load(SeqCst), valid, "every decodable message handled once");
        prop_assert_eq!(dead.len(), payloads.len() - valid, "every other one dead-lettered once");
        for d in dead {
            prop_assert!(d.reason.starts_with("poison message"), "{}", d.reason);
            prop_assert_eq!(d.attempts, 1);
        }
        bus.shutdown(Duration::from_secs(1)).await;
        Ok(())
    })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        "\\PC{0,64}".prop_map(String::into_bytes),
        (any::<u64>(), proptest::collection::vec("[a-z]{0,8}", 0..4))
            .prop_map(|(id, items)| serde_json::to_vec(&Order { id, items }).unwrap()),
        Just(br#"{"id": -1, "items": []}"#.to_vec()),
        Just(br#"{"id": 1, "items": [1]}"#.to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_payload_is_handled_or_dead_lettered_exactly_once(payloads in proptest::collection::vec(payload(), 1..20)) {
        run(payloads)?;
    }
}
