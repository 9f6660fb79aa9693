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

            /// A delayed publish keeps its due time in the row; the relay publishes it at once with that time, so the
            /// bus holds it (the in-memory bus natively: a message due in an hour is relayed, waits there and can be
            /// cancelled) and no handler gets it before it is due.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_delayed_publish_keeps_its_due_time_and_is_delivered_no_earlier() {
                use std::time::SystemTime;
                let (outbox, faults, users) = super::setup().await;
                let t = topic::<Event>("delayed", TopicConfig::at_least_once());
                let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
                let s = seen.clone();
                outbox
                    .bus()
                    .subscribe(&t, "sub", SubscriptionConfig::default(), move |m: Message<Event>| {
                        s.lock().unwrap().push((m.n, m.attempt(), SystemTime::now()));
                        async { Ok(()) }
                    })
                    .await
                    .unwrap();
                let due = SystemTime::now() + Duration::from_secs(2);
                let mut tx = outbox.pool().begin().await.unwrap();
                sqlx::query(&format!("INSERT INTO {users} (id) VALUES (1)")).execute(&mut *tx).await.unwrap();
                let soon = outbox
                    .publish_with(&mut tx, &t, &Event { n: 1 }, PublishOptions::new().deliver_at(due))
                    .await
                    .unwrap();
                let later = outbox
                    .publish_with(
                        &mut tx,
                        &t,
                        &Event { n: 2 },
                        PublishOptions::new().deliver_after(Duration::from_secs(3600)),
                    )
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                let stored: Vec<Option<i64>> =
                    sqlx::query_scalar(&format!("SELECT deliver_at FROM {} ORDER BY seq", outbox.table()))
                        .fetch_all(outbox.pool())
                        .await
                        .unwrap();
                assert_eq!(stored.len(), 2);
                assert_eq!(
                    stored[0],
                    Some(tidings_core::backend::time::micros_ceil(due)),
                    "the row keeps the due time, rounded up"
                );
                assert!(stored[1] > stored[0], "{stored:?}");
                let relay = outbox.relay().spawn();
                assert!(
                    eventually(10, || faults.accepted(t.name()) == vec![soon.to_string(), later.to_string()]).await,
                    "the relay publishes both at once, the one due in an hour too: {:?}",
                    faults.accepted(t.name())
                );
                assert!(eventually(30, || !seen.lock().unwrap().is_empty()).await, "delivered once due");
                let (n, attempt, handled) = seen.lock().unwrap()[0];
                assert_eq!((n, attempt), (1, 1));
                assert!(
                    handled >= due,
                    "handled {:?} before its due time",
                    due.duration_since(handled).unwrap_or_default()
                );
                assert!(eventually(10, || relay.relayed() == 2).await);
                assert_eq!(rows(&outbox).await, 0, "relayed rows are deleted, scheduled ones too");
                assert!(t.cancel(outbox.bus(), &later).await.unwrap(), "the bus keeps the one due in an hour");
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert_eq!(seen.lock().unwrap().len(), 1, "the hour-long one was not delivered");
                relay.shutdown().await;
            }

            /// Bad due times are handled as a direct publish handles them: a time in the past delivers at once (the
            /// row has no due time), a delay beyond a subscription's retention is refused when written, naming the
            /// value and the limit, and writes nothing.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_past_due_time_delivers_at_once_and_one_beyond_retention_is_refused() {
                use std::time::SystemTime;
                let (outbox, _faults, _users) = super::setup().await;
                let t = topic::<Event>("due", TopicConfig::at_least_once());
                let seen = Arc::new(AtomicUsize::new(0));
                let s = seen.clone();
                let config = SubscriptionConfig::default().with_message_retention(Duration::from_secs(3600));
                outbox
                    .bus()
                    .subscribe(&t, "kept-an-hour", config, move |_m: Message<Event>| {
                        s.fetch_add(1, SeqCst);
                        async { Ok(()) }
                    })
                    .await
                    .unwrap();
                let mut tx = outbox.pool().begin().await.unwrap();
                let past = PublishOptions::new().deliver_at(SystemTime::now() - Duration::from_secs(3600));
                outbox.publish_with(&mut tx, &t, &Event { n: 1 }, past).await.unwrap();
                tx.commit().await.unwrap();
                let stored: Option<i64> = sqlx::query_scalar(&format!("SELECT deliver_at FROM {}", outbox.table()))
                    .fetch_one(outbox.pool())
                    .await
                    .unwrap();
                assert_eq!(stored, None, "a time in the past is no due time");
                assert_eq!(outbox.relay().drain().await.unwrap(), 1);
                assert!(eventually(10, || seen.load(SeqCst) == 1).await, "delivered at once");

                let mut tx = outbox.pool().begin().await.unwrap();
                let far = PublishOptions::new().deliver_after(Duration::from_secs(2 * 3600));
                let e = outbox.publish_with(&mut tx, &t, &Event { n: 2 }, far).await.unwrap_err();
                tx.commit().await.unwrap();
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
                let text = e.to_string();
                assert!(
                    text.contains("2h from now") && text.contains("beyond 1h") && text.contains("\"kept-an-hour\""),
                    "{text}"
                );
                assert_eq!(rows(&outbox).await, 0, "nothing written");
            }

            /// A table created by tidings-outbox 0.1 (no `deliver_at` column): writing and relaying are refused with
            /// an error naming `Outbox::migrate()`; `migrate` adds the column (twice is a no-op), the 0.1 row is then
            /// relayed as it was written and a delayed message goes through the upgraded table.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_0_1_table_is_upgraded_by_migrate() {
                use std::time::SystemTime;
                let (outbox, _faults, _users) = super::setup().await;
                let t = topic::<Event>("upgrade", TopicConfig::at_least_once());
                let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
                let s = seen.clone();
                outbox
                    .bus()
                    .subscribe(&t, "sub", SubscriptionConfig::default(), move |m: Message<Event>| {
                        s.lock().unwrap().push((m.n, m.id().clone(), SystemTime::now()));
                        async { Ok(()) }
                    })
                    .await
                    .unwrap();
                let old_id = tidings_core::MessageId::generate();
                let old = super::v0_1_table(&outbox).await;
                // A row as 0.1 wrote it: the message's columns, no due time.
                let now = tidings_core::backend::time::micros(SystemTime::now());
                sqlx::query(&format!(
                    "INSERT INTO {} (topic, exactly_once, ordered, message_id, payload, attributes, ordering_key, \
                     created_at) VALUES ('{}', false, false, '{old_id}', {}, '{{}}', NULL, {now})",
                    old.table(),
                    t.name(),
                    super::PARAM
                ))
                .bind(br#"{"n":1}"#.as_slice())
                .execute(old.pool())
                .await
                .unwrap();
                let refused = |e: tidings_core::Error| {
                    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
                    let text = e.to_string();
                    assert!(text.contains("Outbox::migrate()") && text.contains(old.table()), "{text}");
                };
                let mut tx = old.pool().begin().await.unwrap();
                refused(old.publish(&mut tx, &t, &Event { n: 9 }).await.unwrap_err());
                tx.rollback().await.unwrap();
                let relay = old.relay(); // one relay throughout: on SQLite it holds the lease
                refused(relay.drain().await.unwrap_err());
                assert_eq!(rows(&old).await, 1, "the 0.1 row waits");

                old.migrate().await.unwrap();
                old.migrate().await.expect("a second migrate finds the column and does nothing");
                let due = SystemTime::now() + Duration::from_secs(1);
                let mut tx = old.pool().begin().await.unwrap();
                old.publish_with(&mut tx, &t, &Event { n: 3 }, PublishOptions::new().deliver_at(due)).await.unwrap();
                tx.commit().await.unwrap();
                assert_eq!(relay.drain().await.unwrap(), 2);
                assert!(eventually(30, || seen.lock().unwrap().len() == 2).await, "{:?}", seen.lock().unwrap());
                let seen = seen.lock().unwrap().clone();
                assert_eq!((seen[0].0, &seen[0].1), (1, &old_id), "the 0.1 row, with the id it was written with");
                assert_eq!(seen[1].0, 3);
                assert!(seen[1].2 >= due, "the delayed one was delivered before its due time");
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
