//! The inbox cases, run on each database by `inbox_cases!()` in tests/sqlite.rs and tests/postgres.rs. Each file
//! defines `Db`, `setup()` (a pool, an inbox on a fresh table, an effects table) and `bus()` (the in-memory bus).

macro_rules! inbox_cases {
    () => {
        use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
        use std::sync::Arc;
        use std::time::Duration;

        use support::{config, eventually, topic, Job};
        use tidings_core::{ErrorKind, HandlerError, Message, PublishOptions};

        /// Records the effect of message `m` in `tx`.
        async fn record(tx: &mut <Db as sqlx::Database>::Connection, effects: &str, m: &Message<Job>) {
            sqlx::query(&format!("INSERT INTO {effects} (n, message_id) VALUES ($1, $2)"))
                .bind(m.n)
                .bind(m.id().as_str())
                .execute(&mut *tx)
                .await
                .expect("the effect is written");
        }

        /// Every connection of the pool still works after a handler ended its transaction itself: more messages than
        /// the pool has connections are processed, each once.
        async fn healthy_afterwards(
            s: &Setup,
            bus: &tidings_core::Bus,
            t: &tidings_core::Topic<Job>,
            sub: &tidings_core::Subscription,
        ) {
            let before = count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await;
            for n in 2..10 {
                t.publish(bus, &Job { n }).await.unwrap();
            }
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, before + 8);
            let dead = sub.dead_letters(10).await.unwrap();
            assert!(dead.is_empty(), "{dead:?}");
        }

        async fn count(pool: &sqlx::Pool<Db>, sql: &str) -> i64 {
            sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
        }

        /// The effect happens once; the same message again (a republish with its id) is skipped and acked, and
        /// the metrics count one processed and one skipped.
        #[tokio::test(flavor = "current_thread")]
        async fn a_message_is_processed_once_and_its_copy_skipped() {
            let recorder = metrics_util::debugging::DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            let _local = metrics::set_default_local_recorder(&recorder);
            let s = setup().await;
            let bus = bus();
            let t = topic("once");
            let effects = s.effects.clone();
            let calls = Arc::new(AtomicU32::new(0));
            let c = calls.clone();
            let sub = s
                .inbox
                .subscribe(&bus, &t, "billing", config(3), move |m: Message<Job>, mut tx| {
                    let (effects, c) = (effects.clone(), c.clone());
                    async move {
                        c.fetch_add(1, SeqCst);
                        record(&mut tx, &effects, &m).await;
                        Ok(tx)
                    }
                })
                .await
                .unwrap();
            let id = t.publish(&bus, &Job { n: 1 }).await.unwrap();
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            t.publish_with(&bus, &Job { n: 1 }, PublishOptions::new().id(id.clone())).await.unwrap();
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 1, "the effect once");
            assert_eq!(calls.load(SeqCst), 1, "the handler ran once: the copy was skipped");
            let row: (String, String, i64, i64) = sqlx::query_as(&format!(
                "SELECT subscription, message_id, processed_at, expires_at FROM {}",
                s.inbox.table()
            ))
            .fetch_one(&s.pool)
            .await
            .unwrap();
            assert_eq!((row.0.as_str(), row.1.as_str()), (format!("{}--billing", t.name()).as_str(), id.as_str()));
            let window = config(3).message_retention.as_micros() as i64;
            assert_eq!(row.3 - row.2, window, "kept for the subscription's retention by default");
            sqlx::query(&format!(
                "INSERT INTO {} (subscription, message_id, processed_at, expires_at) VALUES ('old', 'old', 0, 1)",
                s.inbox.table()
            ))
            .execute(&s.pool)
            .await
            .unwrap();
            assert_eq!(s.inbox.sweep().await.unwrap(), 1, "the expired row, not the fresh one");
            let counters: std::collections::HashMap<String, u64> = snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .filter_map(|(k, _, _, v)| match v {
                    metrics_util::debugging::DebugValue::Counter(c) => Some((k.key().name().to_string(), c)),
                    _ => None,
                })
                .collect();
            assert_eq!(counters.get(tidings_inbox::PROCESSED), Some(&1), "{counters:?}");
            assert_eq!(counters.get(tidings_inbox::SKIPPED), Some(&1), "{counters:?}");
            assert_eq!(counters.get(tidings_inbox::SWEPT), Some(&1), "{counters:?}");
            bus.shutdown(Duration::from_secs(5)).await;
            s.cleanup().await;
        }

        /// A handler that fails or panics after its write rolls it back: the retry writes it again, once.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn errors_and_panics_roll_back_and_retry() {
            support::quiet_injected_panics();
            let s = setup().await;
            let bus = bus();
            let t = topic("fail");
            let effects = s.effects.clone();
            let sub = s
                .inbox
                .subscribe(&bus, &t, "s", config(5), move |m: Message<Job>, mut tx| {
                    let effects = effects.clone();
                    async move {
                        record(&mut tx, &effects, &m).await;
                        match m.attempt() {
                            1 => Err(HandlerError::retry("failed after the write")),
                            2 => panic!("injected panic after the write"),
                            _ => Ok(tx),
                        }
                    }
                })
                .await
                .unwrap();
            t.publish(&bus, &Job { n: 7 }).await.unwrap();
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 1);
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.inbox.table())).await, 1);
            assert!(sub.dead_letters(10).await.unwrap().is_empty());
            bus.shutdown(Duration::from_secs(5)).await;
            s.cleanup().await;
        }

        /// Subscribes a handler (no retries) that records its message and, on message 1's first delivery, runs
        /// `statement` itself, once; publishes message 1 and returns once it is dead-lettered, checking the reason.
        async fn ended_by_the_handler(
            statement: &'static str,
        ) -> (Setup, tidings_core::Bus, tidings_core::Topic<Job>, tidings_core::Subscription, tidings_core::MessageId) {
            let s = setup().await;
            let bus = bus();
            let t = topic("ended");
            let (effects, once) = (s.effects.clone(), Arc::new(std::sync::atomic::AtomicBool::new(true)));
            let sub = s
                .inbox
                .subscribe(&bus, &t, "s", config(0), move |m: Message<Job>, mut tx| {
                    let (effects, once) = (effects.clone(), once.clone());
                    async move {
                        record(&mut tx, &effects, &m).await;
                        if m.n == 1 && once.swap(false, SeqCst) {
                            sqlx::query(statement).execute(&mut *tx).await?;
                        }
                        Ok(tx)
                    }
                })
                .await
                .unwrap();
            let id = t.publish(&bus, &Job { n: 1 }).await.unwrap();
            assert!(eventually(10, || async { !sub.dead_letters(1).await.unwrap().is_empty() }).await);
            let dead = sub.dead_letters(1).await.unwrap();
            assert!(dead[0].reason.contains("ended the inbox transaction itself"), "{statement}: {}", dead[0].reason);
            (s, bus, t, sub, id)
        }

        /// A handler that commits the transaction itself gets an error (here: dead-lettered at once, no retries),
        /// never a silent second commit; what it committed is the message's row, so a redrive is skipped.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_handler_that_commits_itself_gets_an_error() {
            let (s, bus, t, sub, _) = ended_by_the_handler("COMMIT").await;
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 1);
            assert_eq!(sub.redrive_all().await.unwrap(), 1);
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 1, "skipped");
            let left = sub.dead_letters(1).await.unwrap();
            assert!(left.is_empty(), "{left:?}");
            healthy_afterwards(&s, &bus, &t, &sub).await;
            bus.shutdown(Duration::from_secs(5)).await;
            s.cleanup().await;
        }

        /// A handler that rolls the transaction back itself gets an error too; its write before the ROLLBACK is
        /// gone with the message's row, so a redrive runs the handler again.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_handler_that_rolls_back_itself_gets_an_error_and_is_retried() {
            let (s, bus, t, sub, id) = ended_by_the_handler("ROLLBACK").await;
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 0);
            let rows = format!("SELECT count(*) FROM {} WHERE message_id = '{}'", s.inbox.table(), id.as_str());
            assert_eq!(count(&s.pool, &rows).await, 0, "no row: a redrive runs the handler again");
            assert_eq!(sub.redrive_all().await.unwrap(), 1);
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 1, "processed on redrive");
            healthy_afterwards(&s, &bus, &t, &sub).await;
            bus.shutdown(Duration::from_secs(5)).await;
            s.cleanup().await;
        }

        /// `provisioning = "verify"` (set on the inbox, or in the bus's backend section) and no table: the subscribe
        /// fails, naming the table and the book's inbox page; `Auto` creates it.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn verify_without_the_table_fails_at_subscribe_naming_it() {
            use tidings_core::backend::cloud::Provisioning;
            let s = setup().await;
            let t = topic("verify");
            let missing = format!("inbox_missing_{}", support::unique());
            let inbox = s.inbox.clone().with_table(&missing).unwrap().with_provisioning(Provisioning::Verify);
            let bus = bus();
            let handler = |_m: Message<Job>, tx| async move { Ok(tx) };
            let e = inbox.subscribe(&bus, &t, "s", config(0), handler).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            let text = e.to_string();
            assert!(text.contains(&missing) && text.contains("inbox.html") && text.contains("verify"), "{text}");
            // The same from the bus's configuration: `[local] provisioning = "verify"`.
            let settings =
                tidings_core::Settings::from_toml("backend = \"local\"\n[local]\nprovisioning = \"verify\"").unwrap();
            let configured =
                tidings_core::Bus::builder(Arc::new(tidings_local::LocalBackend::new())).settings(settings).build();
            let inbox = s.inbox.clone().with_table(&missing).unwrap();
            let e = inbox.subscribe(&configured, &t, "s", config(0), handler).await.unwrap_err();
            assert!(e.to_string().contains(&missing), "{e}");
            // Auto creates it, and a second inbox on it only looks.
            let created = s.inbox.clone().with_table(&missing).unwrap().with_provisioning(Provisioning::Auto);
            created.subscribe(&bus, &t, "s", config(0), handler).await.unwrap();
            created.migrate().await.unwrap();
            created.verify().await.unwrap();
            bus.shutdown(Duration::from_secs(5)).await;
            sqlx::query(&format!("DROP TABLE {missing}")).execute(&s.pool).await.unwrap();
            s.cleanup().await;
        }

        /// Settings are checked: the error names the value and the rule.
        #[tokio::test(flavor = "current_thread")]
        async fn bad_settings_are_refused_naming_the_value() {
            let s = setup().await;
            for bad in ["", "1x", "Inbox", "a-b", "x;drop"] {
                let e = s.inbox.clone().with_table(bad).unwrap_err().to_string();
                assert!(e.contains(&format!("{bad:?}")) && e.contains("[a-z0-9_]"), "{e}");
            }
            let e = s.inbox.clone().with_window(Duration::ZERO).unwrap_err().to_string();
            assert!(e.contains("window 0s") && e.contains("positive"), "{e}");
            let e = s.inbox.clone().with_sweep(Duration::ZERO, 10).unwrap_err().to_string();
            assert!(e.contains("interval 0s"), "{e}");
            let e = s.inbox.clone().with_sweep(Duration::from_secs(1), 0).unwrap_err().to_string();
            assert!(e.contains("batch 0"), "{e}");
            s.cleanup().await;
        }

        /// Rows are kept for the window: within it a copy is skipped; the sweep then deletes them in bounded
        /// statements, and a copy after the window runs the handler again.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rows_live_for_the_window_then_are_swept() {
            let s = setup().await;
            let window = Duration::from_millis(800);
            let inbox = s.inbox.clone().with_window(window).unwrap().with_sweep(Duration::from_millis(50), 2).unwrap();
            let bus = bus();
            let t = topic("window");
            let effects = s.effects.clone();
            let sub = inbox
                .subscribe(&bus, &t, "s", config(3), move |m: Message<Job>, mut tx| {
                    let effects = effects.clone();
                    async move {
                        record(&mut tx, &effects, &m).await;
                        Ok(tx)
                    }
                })
                .await
                .unwrap();
            let mut ids = Vec::new();
            for n in 0..5 {
                ids.push(t.publish(&bus, &Job { n }).await.unwrap());
            }
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            let rows = format!("SELECT count(*) FROM {}", s.inbox.table());
            let effects = format!("SELECT count(*) FROM {}", s.effects);
            // Within the window (it was written less than 800 ms ago: checked below), a copy is skipped.
            t.publish_with(&bus, &Job { n: 0 }, PublishOptions::new().id(ids[0].clone())).await.unwrap();
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            let oldest: i64 = sqlx::query_scalar(&format!("SELECT min(processed_at) FROM {}", s.inbox.table()))
                .fetch_one(&s.pool)
                .await
                .unwrap();
            let age = tidings_core::backend::time::micros(std::time::SystemTime::now()) - oldest;
            if age < window.as_micros() as i64 {
                assert_eq!(count(&s.pool, &effects).await, 5, "the copy within the window was skipped");
            }
            assert!(
                eventually(10, || async { count(&s.pool, &rows).await == 0 }).await,
                "the sweep deleted the expired rows"
            );
            // After the window, the same message runs again.
            let before = count(&s.pool, &effects).await;
            t.publish_with(&bus, &Job { n: 1 }, PublishOptions::new().id(ids[1].clone())).await.unwrap();
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert_eq!(count(&s.pool, &effects).await, before + 1, "a copy after the window is processed again");
            bus.shutdown(Duration::from_secs(5)).await;
            s.cleanup().await;
        }

        /// `Inbox::sweep` deletes expired rows only, all of them across several bounded statements; the sweep task
        /// stops once the bus's subscriptions have stopped.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sweep_deletes_expired_rows_and_stops_with_the_bus() {
            let s = setup().await;
            let inbox = s.inbox.clone().with_sweep(Duration::from_millis(50), 2).unwrap();
            inbox.migrate().await.unwrap();
            let insert = format!(
                "INSERT INTO {} (subscription, message_id, processed_at, expires_at) VALUES ($1, $2, 0, $3)",
                s.inbox.table()
            );
            let add = |id: String, expires: i64| {
                let (pool, insert) = (s.pool.clone(), insert.clone());
                async move {
                    sqlx::query(&insert).bind("manual").bind(id).bind(expires).execute(&pool).await.unwrap();
                }
            };
            for i in 0..5 {
                add(format!("old-{i}"), 1).await;
            }
            add("fresh".into(), i64::MAX).await;
            assert_eq!(inbox.sweep().await.unwrap(), 5, "five expired rows, in statements of two");
            let rows = format!("SELECT count(*) FROM {}", s.inbox.table());
            assert_eq!(count(&s.pool, &rows).await, 1, "the unexpired row stays");
            // While a subscription runs, the sweep task deletes expired rows.
            let bus = bus();
            let t = topic("sweeper");
            inbox.subscribe(&bus, &t, "s", config(0), |_m: Message<Job>, tx| async move { Ok(tx) }).await.unwrap();
            add("old-during".into(), 1).await;
            assert!(eventually(10, || async { count(&s.pool, &rows).await == 1 }).await, "swept while subscribed");
            // After the bus shut down (its handlers dropped), nothing sweeps any more.
            bus.shutdown(Duration::from_secs(5)).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            add("old-after".into(), 1).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(count(&s.pool, &rows).await, 2, "no sweep after shutdown (10 intervals passed)");
            s.cleanup().await;
        }

        /// Two copies of one message at once: the second waits for the first's row and is skipped; never both
        /// commit.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_copies_serialize_on_the_row() {
            let s = setup().await;
            let bus = bus();
            let t = topic("copies");
            let effects = s.effects.clone();
            let entered = Arc::new(AtomicU32::new(0));
            let e = entered.clone();
            let sub = s
                .inbox
                .subscribe(&bus, &t, "s", config(3).with_max_concurrency(4), move |m: Message<Job>, mut tx| {
                    let (effects, e) = (effects.clone(), e.clone());
                    async move {
                        e.fetch_add(1, SeqCst);
                        record(&mut tx, &effects, &m).await;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok(tx)
                    }
                })
                .await
                .unwrap();
            let id = t.publish(&bus, &Job { n: 1 }).await.unwrap();
            t.publish_with(&bus, &Job { n: 1 }, PublishOptions::new().id(id)).await.unwrap();
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 1);
            assert_eq!(entered.load(SeqCst), 1, "the second copy never ran the handler");
            bus.shutdown(Duration::from_secs(5)).await;
            s.cleanup().await;
        }

        /// A nested transaction on the inbox transaction is a savepoint: rolling it back keeps the rest.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn savepoints_inside_the_handler_work() {
            use sqlx::Connection;
            let s = setup().await;
            let bus = bus();
            let t = topic("savepoint");
            let effects = s.effects.clone();
            let sub = s
                .inbox
                .subscribe(&bus, &t, "s", config(0), move |m: Message<Job>, mut tx| {
                    let effects = effects.clone();
                    async move {
                        record(&mut tx, &effects, &m).await;
                        let mut inner = (*tx).begin().await?;
                        record(&mut inner, &effects, &m).await;
                        inner.rollback().await?;
                        let mut kept = (*tx).begin().await?;
                        record(&mut kept, &effects, &Message::new(Job { n: m.n + 1 }, m.meta.clone())).await;
                        kept.commit().await?;
                        Ok(tx)
                    }
                })
                .await
                .unwrap();
            t.publish(&bus, &Job { n: 1 }).await.unwrap();
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            let ns: Vec<i64> = sqlx::query_scalar(&format!("SELECT n FROM {} ORDER BY n", s.effects))
                .fetch_all(&s.pool)
                .await
                .unwrap();
            assert_eq!(ns, vec![1, 2], "the rolled-back savepoint's write is gone, the released one's stays");
            assert!(sub.dead_letters(1).await.unwrap().is_empty());
            bus.shutdown(Duration::from_secs(5)).await;
            s.cleanup().await;
        }

        /// The outbox publishes inside the inbox transaction (`&mut tx` is the connection it takes): once per
        /// message, even when the message comes twice.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn outbox_publishes_inside_the_transaction_once() {
            let s = setup().await;
            let bus = bus();
            let (t, down) = (topic("orders"), topic("shipments"));
            let outbox = tidings_outbox::Outbox::new(s.pool.clone(), bus.clone())
                .with_table(&format!("outbox_{}", support::unique()))
                .unwrap();
            outbox.migrate().await.unwrap();
            let got = Arc::new(AtomicU32::new(0));
            let g = got.clone();
            let shipments = bus
                .subscribe(&down, "shipping", config(3), move |_m: Message<Job>| {
                    g.fetch_add(1, SeqCst);
                    async { Ok(()) }
                })
                .await
                .unwrap();
            let relay = outbox.relay().spawn();
            let (o, d) = (outbox.clone(), tidings_core::Topic::<Job>::new(down.name(), down.config()));
            let sub = s
                .inbox
                .subscribe(&bus, &t, "s", config(3), move |m: Message<Job>, mut tx| {
                    let (o, d) = (o.clone(), tidings_core::Topic::<Job>::new(d.name(), d.config()));
                    async move {
                        o.publish(&mut tx, &d, &Job { n: m.n * 10 }).await?;
                        Ok(tx)
                    }
                })
                .await
                .unwrap();
            let id = t.publish(&bus, &Job { n: 4 }).await.unwrap();
            t.publish_with(&bus, &Job { n: 4 }, PublishOptions::new().id(id)).await.unwrap();
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert!(eventually(10, || async { got.load(SeqCst) >= 1 }).await);
            assert_eq!(relay.shutdown().await, 1, "one outbox row for two copies");
            assert!(shipments.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert_eq!(got.load(SeqCst), 1);
            bus.shutdown(Duration::from_secs(5)).await;
            sqlx::query(&format!("DROP TABLE IF EXISTS {}", outbox.table())).execute(&s.pool).await.unwrap();
            sqlx::query(&format!("DROP TABLE IF EXISTS {}_relay", outbox.table())).execute(&s.pool).await.unwrap();
            s.cleanup().await;
        }
    };
}
