//! The batch cases of the inbox (`Inbox::subscribe_batch`), run on each database by `inbox_batch_cases!()` after
//! `inbox_cases!()` (whose helpers they use) in tests/sqlite.rs and tests/postgres.rs.

macro_rules! inbox_batch_cases {
    () => {
        use tidings_core::BatchOutcome;

        /// Batches of up to 2, gathered for up to a second (a batch published at once goes in one).
        fn batch_config(max_retries: u32) -> tidings_core::SubscriptionConfig {
            config(max_retries).with_max_messages(2).with_max_wait(Duration::from_secs(1))
        }

        /// Publishes jobs `ns` in one publish.
        async fn publish_jobs(
            bus: &tidings_core::Bus,
            t: &tidings_core::Topic<Job>,
            ns: &[i64],
        ) -> Vec<tidings_core::MessageId> {
            let jobs: Vec<Job> = ns.iter().map(|n| Job { n: *n }).collect();
            t.publish_batch(bus, jobs.iter().map(|j| (j, PublishOptions::new()))).await.unwrap()
        }

        /// A batch handler that runs `statement` itself on its first call: every message of the batch gets the
        /// error (dead-lettered at once, no retries), never a silent second commit.
        async fn batch_ended_by_the_handler(statement: &'static str) -> (Setup, tidings_core::Bus) {
            let s = setup().await;
            let bus = bus();
            let t = topic("batch-ended");
            let (effects, once) = (s.effects.clone(), Arc::new(std::sync::atomic::AtomicBool::new(true)));
            let sub = s
                .inbox
                .subscribe_batch(&bus, &t, "s", batch_config(0), move |batch: Vec<Message<Job>>, mut tx| {
                    let (effects, once) = (effects.clone(), once.clone());
                    async move {
                        for m in &batch {
                            record(&mut tx, &effects, m).await;
                        }
                        if once.swap(false, SeqCst) {
                            sqlx::query(statement).execute(&mut *tx).await?;
                        }
                        Ok((BatchOutcome::AckAll, tx))
                    }
                })
                .await
                .unwrap();
            publish_jobs(&bus, &t, &[1, 2]).await;
            assert!(eventually(10, || async { sub.dead_letters(2).await.unwrap().len() == 2 }).await);
            for dead in sub.dead_letters(2).await.unwrap() {
                assert!(dead.reason.contains("ended the inbox transaction itself"), "{statement}: {}", dead.reason);
            }
            bus.shutdown(Duration::from_secs(5)).await;
            (s, bus)
        }

        /// A batch handler that commits the transaction itself gets an error for every message of the batch.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_batch_handler_that_commits_itself_gets_an_error() {
            let (s, _bus) = batch_ended_by_the_handler("COMMIT").await;
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 2);
            s.cleanup().await;
        }

        /// A batch handler that rolls back itself gets an error too; its writes and the rows are gone.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_batch_handler_that_rolls_back_itself_gets_an_error() {
            let (s, _bus) = batch_ended_by_the_handler("ROLLBACK").await;
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 0);
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.inbox.table())).await, 0);
            s.cleanup().await;
        }

        /// A batch handler returning fewer outcomes than the messages it was handed: the transaction rolls back (no
        /// row, no write), every message is retried, and the next call processes each once.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_wrong_outcome_count_rolls_the_batch_back() {
            let s = setup().await;
            let bus = bus();
            let t = topic("batch-count");
            let (effects, calls) = (s.effects.clone(), Arc::new(AtomicU32::new(0)));
            let c = calls.clone();
            let sub = s
                .inbox
                .subscribe_batch(&bus, &t, "s", batch_config(3), move |batch: Vec<Message<Job>>, mut tx| {
                    let (effects, c) = (effects.clone(), c.clone());
                    async move {
                        c.fetch_add(1, SeqCst);
                        for m in &batch {
                            record(&mut tx, &effects, m).await;
                        }
                        match batch[0].attempt() {
                            1 => Ok((BatchOutcome::Each(vec![Ok(())]), tx)),
                            _ => Ok((BatchOutcome::AckAll, tx)),
                        }
                    }
                })
                .await
                .unwrap();
            publish_jobs(&bus, &t, &[1, 2]).await;
            assert!(eventually(10, || async { calls.load(SeqCst) >= 2 }).await);
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 2, "each write once");
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.inbox.table())).await, 2);
            assert!(sub.dead_letters(10).await.unwrap().is_empty());
            bus.shutdown(Duration::from_secs(5)).await;
            s.cleanup().await;
        }

        /// Messages processed already are acked and not handed over; a batch of only such messages does not call the
        /// handler. The processed and skipped metrics count messages.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn processed_messages_of_a_batch_are_skipped() {
            let s = setup().await;
            let bus = bus();
            let t = topic("batch-skip");
            let (effects, handed) = (s.effects.clone(), Arc::new(std::sync::Mutex::new(Vec::new())));
            let h = handed.clone();
            let sub = s
                .inbox
                .subscribe_batch(&bus, &t, "s", batch_config(3), move |batch: Vec<Message<Job>>, mut tx| {
                    let (effects, h) = (effects.clone(), h.clone());
                    async move {
                        h.lock().unwrap().push(batch.iter().map(|m| m.n).collect::<Vec<_>>());
                        for m in &batch {
                            record(&mut tx, &effects, m).await;
                        }
                        Ok((BatchOutcome::AckAll, tx))
                    }
                })
                .await
                .unwrap();
            let first = publish_jobs(&bus, &t, &[1]).await;
            assert!(eventually(10, || async { handed.lock().unwrap().len() == 1 }).await);
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            let again =
                [(Job { n: 1 }, PublishOptions::new().id(first[0].clone())), (Job { n: 2 }, PublishOptions::new())];
            t.publish_batch(&bus, again.iter().map(|(j, o)| (j, o.clone()))).await.unwrap();
            assert!(eventually(10, || async { handed.lock().unwrap().len() == 2 }).await);
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            t.publish_with(&bus, &Job { n: 1 }, PublishOptions::new().id(first[0].clone())).await.unwrap();
            assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
            assert_eq!(*handed.lock().unwrap(), vec![vec![1], vec![2]], "1's copies were not handed over");
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 2);
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.inbox.table())).await, 2);
            bus.shutdown(Duration::from_secs(5)).await;
            s.cleanup().await;
        }

        /// Two copies of one message in a batch (a lease ran out while the batch was gathered): the first is handed
        /// over, the second gets its outcome, so a retried message's other copy is not acked (which would settle it
        /// without its row). Called through `Inbox::batch_handler` directly, with the copies made by hand.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_second_copy_in_the_batch_takes_the_first_copys_outcome() {
            use tidings_core::{BatchHandler, MessageId, Metadata};
            let s = setup().await;
            let bus = bus();
            let t = topic("batch-copies");
            let (effects, handed) = (s.effects.clone(), Arc::new(std::sync::Mutex::new(Vec::new())));
            let h = handed.clone();
            let handler = s
                .inbox
                .batch_handler(&bus, &t, "s", batch_config(3), move |batch: Vec<Message<Job>>, mut tx| {
                    let (effects, h) = (effects.clone(), h.clone());
                    async move {
                        h.lock().unwrap().push(batch.iter().map(|m| m.n).collect::<Vec<_>>());
                        let mut results = Vec::new();
                        for m in &batch {
                            if m.n == 1 && m.attempt() == 1 {
                                results.push(Err(HandlerError::retry("not yet")));
                                continue;
                            }
                            record(&mut tx, &effects, m).await;
                            results.push(Ok(()));
                        }
                        Ok((BatchOutcome::Each(results), tx))
                    }
                })
                .await
                .unwrap();
            let (a, b) = (MessageId::generate(), MessageId::generate());
            let message = |id: &MessageId, n: i64, attempt: u32| {
                Message::new(Job { n }, Metadata::new(id.clone(), std::time::SystemTime::now(), attempt))
            };
            let outcomes = |o: BatchOutcome| match o {
                BatchOutcome::Each(r) => {
                    r.iter().map(|r| r.as_ref().map_err(|e| e.reason().to_string()).err()).collect()
                }
                BatchOutcome::AckAll => vec![None; 3],
            };
            let first = handler.call(vec![message(&a, 1, 1), message(&b, 2, 1), message(&a, 1, 1)]).await.unwrap();
            assert_eq!(outcomes(first), vec![Some("not yet".to_string()), None, Some("not yet".to_string())]);
            let again = handler.call(vec![message(&a, 1, 2), message(&b, 2, 2), message(&a, 1, 2)]).await.unwrap();
            assert_eq!(outcomes(again), vec![None, None, None], "a processed now, b skipped, a's copy acked");
            assert_eq!(*handed.lock().unwrap(), vec![vec![1, 2], vec![1]], "each copy once, b not again");
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.effects)).await, 2);
            assert_eq!(count(&s.pool, &format!("SELECT count(*) FROM {}", s.inbox.table())).await, 2);
            bus.shutdown(Duration::from_secs(5)).await;
            s.cleanup().await;
        }
    };
}
