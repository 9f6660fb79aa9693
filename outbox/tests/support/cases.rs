// The outbox behaviour, written once and expanded for each database by `outbox_cases!` (the two databases'
// `Outbox` methods are inherent, so the cases are a macro rather than generic functions).
#[macro_export]
macro_rules! outbox_cases {
    () => {
        mod outbox {
            use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
            use std::sync::Arc;
            use std::time::Duration;

            use super::support::{eventually, topic, Event};
            use super::{relay_count, rows};
            use tidings_core::{ErrorKind, Message, PublishOptions, SubscriptionConfig, TopicConfig};

            /// The trace context is captured when the row is written, inside the application's transaction and
            /// span, stored with the row, and carried by the publish of a relay started after the row was written.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_trace_context_of_the_write_reaches_the_handler_after_a_relay_restart() {
                use tracing::Instrument;
                let capture = tidings_testkit::conformance::capture::install();
                let (outbox, _faults, users) = super::setup().await;
                let t = topic::<Event>("traced", TopicConfig::at_least_once());
                let _watching = capture.watch(t.name());
                let seen = Arc::new(AtomicUsize::new(0));
                let s = seen.clone();
                outbox
                    .bus()
                    .subscribe(&t, "sub", SubscriptionConfig::default(), move |_m: Message<Event>| {
                        s.fetch_add(1, SeqCst);
                        async { Ok(()) }
                    })
                    .await
                    .unwrap();
                let first = outbox.relay().spawn();
                first.shutdown().await;
                let request = tracing::info_span!("request", test.topic = t.name());
                let mut tx = outbox.pool().begin().await.unwrap();
                async {
                    sqlx::query(&format!("INSERT INTO {users} (id) VALUES (1)")).execute(&mut *tx).await.unwrap();
                    outbox.publish(&mut tx, &t, &Event { n: 1 }).await.unwrap();
                }
                .instrument(request)
                .await;
                tx.commit().await.unwrap();
                let stored: String = sqlx::query_scalar(&format!("SELECT attributes FROM {}", outbox.table()))
                    .fetch_one(outbox.pool())
                    .await
                    .unwrap();
                assert!(stored.contains("tidings.trace.traceparent"), "the row holds the context: {stored}");
                let second = outbox.relay().spawn();
                assert!(eventually(10, || seen.load(SeqCst) == 1).await, "relayed by the restarted relay");
                second.shutdown().await;
                let spans = capture.spans_of(t.name());
                let of = |name: &str| spans.iter().filter(|s| s.name == name).cloned().collect::<Vec<_>>();
                let (requests, process, sends) = (of("request"), of("process"), of("send"));
                assert_eq!(requests.len(), 1, "{spans:#?}");
                assert_eq!(process.len(), 1, "{spans:#?}");
                assert_eq!(process[0].links, vec![requests[0].index], "the handler's span links to the request");
                assert_eq!(sends.len(), 1, "the relay's publish has its send span: {spans:#?}");
                assert_eq!(sends[0].field("messaging.batch.message_count"), Some("1"));
            }

            /// While the broker is down the relay's gauges show the rows waiting and their age; once it is back they
            /// drain to zero and each row's relay lag (insert to publish) spans the outage.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn metrics_show_pending_rows_and_the_relay_lag() {
                use tidings_core::metrics::{OUTBOX_OLDEST_PENDING_AGE, OUTBOX_PENDING, OUTBOX_RELAY_LAG};
                use tidings_testkit::conformance::recorded::{install, snapshot, sum};
                install();
                let (outbox, faults, users) = super::setup().await;
                let table = format!("metrics_{}", super::support::unique());
                let outbox = outbox.with_table(&table).unwrap();
                outbox.migrate().await.unwrap();
                let t = topic::<Event>("metrics", TopicConfig::at_least_once());
                faults.down.store(true, SeqCst);
                let mut tx = outbox.pool().begin().await.unwrap();
                sqlx::query(&format!("INSERT INTO {users} (id) VALUES (7)")).execute(&mut *tx).await.unwrap();
                for n in 0..3 {
                    outbox.publish(&mut tx, &t, &Event { n }).await.unwrap();
                }
                tx.commit().await.unwrap();
                let relay = outbox.relay().metrics_interval(Duration::from_millis(20)).spawn();
                let f = [("table", table.as_str())];
                let gauges = || {
                    let s = snapshot(&f);
                    (sum(&s, OUTBOX_PENDING, &[]), sum(&s, OUTBOX_OLDEST_PENDING_AGE, &[]))
                };
                let down_at = std::time::Instant::now();
                assert!(
                    eventually(10, || {
                        let (pending, age) = gauges();
                        pending == 3.0 && age > 0.2
                    })
                    .await,
                    "3 rows pending, the oldest aging: {:?}",
                    gauges()
                );
                let outage = down_at.elapsed().as_secs_f64();
                faults.down.store(false, SeqCst);
                let mut lags = Vec::new();
                let drained = eventually(30, || {
                    let s = snapshot(&f);
                    lags.extend(s.iter().filter(|x| x.name == OUTBOX_RELAY_LAG).flat_map(|x| x.observations.clone()));
                    sum(&s, OUTBOX_PENDING, &[]) == 0.0 && lags.len() == 3
                })
                .await;
                relay.shutdown().await;
                assert!(drained, "pending back to 0 and 3 lags recorded: {lags:?}");
                assert_eq!(rows(&outbox).await, 0);
                for lag in &lags {
                    assert!(*lag >= outage, "a row's relay lag {lag} s spans the {outage} s outage");
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rollback_publishes_nothing() {
                let (outbox, faults, users) = super::setup().await;
                let t = topic::<Event>("rollback", TopicConfig::at_least_once());
                let mut tx = outbox.pool().begin().await.unwrap();
                sqlx::query(&format!("INSERT INTO {users} (id) VALUES (1)")).execute(&mut *tx).await.unwrap();
                outbox.publish(&mut tx, &t, &Event { n: 1 }).await.unwrap();
                tx.rollback().await.unwrap();
                assert_eq!(outbox.relay().drain().await.unwrap(), 0);
                assert_eq!(faults.total(), 0, "a rolled-back publish is never published");
                assert_eq!(rows(&outbox).await, 0);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn commit_publishes_exactly_once_to_an_exactly_once_topic() {
                let (outbox, faults, users) = super::setup().await;
                let t = topic::<Event>("commit", TopicConfig::exactly_once());
                let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
                let s = seen.clone();
                outbox
                    .bus()
                    .subscribe(&t, "sub", SubscriptionConfig::default(), move |m: Message<Event>| {
                        s.lock().unwrap().push((m.id().clone(), m.n));
                        async { Ok(()) }
                    })
                    .await
                    .unwrap();
                let relay = outbox.relay().spawn();
                let mut tx = outbox.pool().begin().await.unwrap();
                sqlx::query(&format!("INSERT INTO {users} (id) VALUES (1)")).execute(&mut *tx).await.unwrap();
                let id = outbox.publish(&mut tx, &t, &Event { n: 7 }).await.unwrap();
                tx.commit().await.unwrap();
                assert!(eventually(10, || seen.lock().unwrap().len() == 1).await, "relayed after commit");
                assert!(eventually(10, || relay.relayed() == 1).await);
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert_eq!(*seen.lock().unwrap(), vec![(id.clone(), 7)], "one delivery, with the id publish returned");
                assert_eq!(faults.accepted(t.name()), vec![id.to_string()]);
                assert_eq!(rows(&outbox).await, 0, "relayed rows are deleted");
                relay.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_relay_killed_between_publish_and_delete_republishes_and_exactly_once_dedups() {
                let (outbox, faults, _users) = super::setup().await;
                let t = topic::<Event>("crash", TopicConfig::exactly_once());
                let deliveries = Arc::new(AtomicUsize::new(0));
                let d = deliveries.clone();
                outbox
                    .bus()
                    .subscribe(&t, "sub", SubscriptionConfig::default(), move |_m: Message<Event>| {
                        d.fetch_add(1, SeqCst);
                        async { Ok(()) }
                    })
                    .await
                    .unwrap();
                let mut tx = outbox.pool().begin().await.unwrap();
                let id = outbox.publish(&mut tx, &t, &Event { n: 1 }).await.unwrap();
                tx.commit().await.unwrap();
                faults.hang_after_publish.store(true, SeqCst);
                let first = outbox.relay().spawn();
                assert!(eventually(10, || faults.accepted(t.name()).len() == 1).await, "the broker accepted the batch");
                first.abort().await; // killed before it could delete the row
                assert_eq!(rows(&outbox).await, 1, "the row survives the crash");
                faults.hang_after_publish.store(false, SeqCst);
                // PostgreSQL: the dead relay's transaction is rolled back; SQLite: its lease must expire first.
                let second = outbox.relay();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while rows(&outbox).await > 0 && tokio::time::Instant::now() < deadline {
                    second.drain().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert_eq!(
                    faults.accepted(t.name()),
                    vec![id.to_string(), id.to_string()],
                    "republished with the same id"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert_eq!(deliveries.load(SeqCst), 1, "the exactly-once subscriber saw one delivery");
            }

            /// A relay batch larger than one call of the bus (the local bus's `max_publish_batch`, 1,000) reaches it
            /// in one publish call, so a bus that takes a batch of any size all or nothing (SQL, the local bus) gets
            /// all of the relay's batch or none of it.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_relay_batch_reaches_the_bus_in_one_call() {
                let (outbox, faults, _users) = super::setup().await;
                let t = topic::<Event>("whole", TopicConfig::at_least_once());
                assert!(outbox.bus().capabilities().max_publish_batch < 1_500);
                let mut tx = outbox.pool().begin().await.unwrap();
                for n in 0..1_500 {
                    outbox.publish(&mut tx, &t, &Event { n }).await.unwrap();
                }
                tx.commit().await.unwrap();
                assert_eq!(outbox.relay().batch_size(2_000).drain().await.unwrap(), 1_500);
                assert_eq!(faults.calls(t.name()), vec![1_500], "one publish call for the relay's batch");
                assert_eq!(rows(&outbox).await, 0);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn order_per_topic_is_kept() {
                let (outbox, faults, _users) = super::setup().await;
                let topics: Vec<_> =
                    (0..3).map(|i| topic::<Event>(&format!("order{i}"), TopicConfig::at_least_once())).collect();
                let mut expected = vec![Vec::new(); 3];
                for round in 0..5 {
                    let mut tx = outbox.pool().begin().await.unwrap();
                    for n in 0..40u64 {
                        let i = ((n + round) % 3) as usize;
                        let id = outbox.publish(&mut tx, &topics[i], &Event { n }).await.unwrap();
                        expected[i].push(id.to_string());
                    }
                    tx.commit().await.unwrap();
                }
                let relays: Vec<_> = (0..relay_count()).map(|_| outbox.relay().batch_size(7).spawn()).collect();
                assert!(eventually(30, || faults.total() >= 200).await);
                for (i, t) in topics.iter().enumerate() {
                    assert_eq!(faults.accepted(t.name()), expected[i], "topic {i} relayed in insertion order");
                }
                for r in relays {
                    r.shutdown().await;
                }
                assert_eq!(rows(&outbox).await, 0);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_broker_outage_leaves_rows_and_the_relay_catches_up() {
                let (outbox, faults, _users) = super::setup().await;
                let t = topic::<Event>("outage", TopicConfig::at_least_once());
                faults.down.store(true, SeqCst);
                let relay = outbox.relay().spawn();
                let mut tx = outbox.pool().begin().await.unwrap();
                for n in 0..20 {
                    outbox.publish(&mut tx, &t, &Event { n }).await.unwrap();
                }
                tx.commit().await.unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
                assert_eq!(rows(&outbox).await, 20, "nothing is deleted while the broker is down");
                assert_eq!(faults.total(), 0);
                faults.down.store(false, SeqCst);
                assert!(eventually(30, || faults.total() == 20).await, "the relay catches up when the broker returns");
                assert!(eventually(10, || relay.relayed() == 20).await);
                assert_eq!(rows(&outbox).await, 0);
                relay.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn invalid_messages_are_rejected_when_written() {
                let (outbox, _faults, _users) = super::setup().await;
                let t = topic::<Event>("invalid", TopicConfig::at_least_once());
                let mut tx = outbox.pool().begin().await.unwrap();
                let e = outbox
                    .publish_with(&mut tx, &t, &Event { n: 1 }, PublishOptions::new().ordering_key("k"))
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
                assert!(e.to_string().contains("\"k\""), "{e}");
                tx.commit().await.unwrap();
                assert_eq!(rows(&outbox).await, 0, "nothing written");
                outbox.migrate().await.expect("migrate is idempotent");
            }
        }
    };
}
