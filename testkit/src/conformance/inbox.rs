//! The transactional inbox (`tidings-inbox`) on every backend, each case twice: with the inbox on SQLite and on
//! PostgreSQL (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`). On a SQL bus of the same dialect
//! the inbox goes on the bus's own database, where deliveries are acked in the handler's transaction (exact mode);
//! elsewhere it is the application's database beside the broker (the window mode).
//!
//! Faults come from [`InboxFaults`], a layer between the runtime and the backend that loses acks (a consumer
//! that crashed between its commit and its ack) and lease extensions (a slow handler's lease runs out, and the
//! broker hands a second copy to another consumer while the first still runs).
#![allow(missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tidings_core::backend::{
    AckId, BackendInfo, DeadLetterRequest, ReceivedMessage, SubscriptionDriver, SubscriptionSpec, TopicDriver,
    TopicSpec,
};
use tidings_core::dead_letter::DeadLetters;
use tidings_core::layer::Layer;
use tidings_core::{
    Backend, BatchOutcome, Bus, Capabilities, HandlerError, Message, MessageId, PublishOptions, Result, RetryPolicy,
    SubscriptionConfig, Topic, TopicConfig,
};
use tidings_inbox::{Inbox, InboxDatabase};
use tidings_outbox::Outbox;
use tokio::time::Instant;

use super::ledger::{quiet_injected_panics, roll};
use super::support::{topic, wait_dead_letters, wait_until, Event};
use super::{Harness, Timing};

// ---------------------------------------------------------------------------------------------------------------
// The fault layer.

/// Switches and counters of the fault layer ([`InboxFaults::on`]). Faults apply to the subscriptions named in
/// [`InboxFaults::only`] (all when empty).
#[derive(Debug, Default)]
pub struct InboxFaults {
    /// Lose the ack of the first delivery of each message (as if the consumer crashed after its commit).
    pub lose_first_acks: AtomicBool,
    /// Lose one ack in this many (0: none).
    pub lose_every_nth_ack: AtomicU64,
    /// Lose every lease extension (a handler running past the ack deadline loses its lease).
    pub lose_extensions: AtomicBool,
    /// Acks lost so far.
    pub lost_acks: AtomicU64,
    /// Lease extensions lost so far.
    pub lost_extensions: AtomicU64,
    /// The subscriptions (logical names) the faults apply to; all when empty.
    pub only: Mutex<HashSet<String>>,
    acks: AtomicU64,
    /// Deliveries handed out so far, per message id.
    received: Mutex<HashMap<MessageId, u32>>,
    /// Ack ids of the first delivery of a message.
    first: Mutex<HashSet<AckId>>,
    /// Deliveries handed out so far, per subscription (logical name).
    by_subscription: Mutex<HashMap<String, u64>>,
}

impl InboxFaults {
    /// A bus on the same backend and settings as `bus`, with this fault layer between the runtime and the backend.
    pub fn on(self: &Arc<Self>, bus: &Bus) -> Bus {
        Bus::builder(bus.backend().clone()).settings(bus.settings().clone()).layer(FaultLayer(self.clone())).build()
    }

    /// Deliveries handed out so far to subscription `name` (the handler ran, or the inbox skipped them, or its
    /// transaction could not begin).
    pub fn received(&self, name: &str) -> u64 {
        self.by_subscription.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    fn applies(&self, subscription: &str) -> bool {
        let only = self.only.lock().unwrap();
        only.is_empty() || only.contains(subscription)
    }
}

struct FaultLayer(Arc<InboxFaults>);

impl Layer for FaultLayer {
    fn layer(&self, inner: Arc<dyn Backend>) -> Arc<dyn Backend> {
        Arc::new(Faulty { inner, faults: self.0.clone() })
    }
}

#[derive(Debug)]
struct Faulty {
    inner: Arc<dyn Backend>,
    faults: Arc<InboxFaults>,
}

#[async_trait]
impl Backend for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn topic(&self, spec: &TopicSpec) -> Result<Arc<dyn TopicDriver>> {
        self.inner.topic(spec).await
    }
    async fn subscription(&self, spec: &SubscriptionSpec) -> Result<Arc<dyn SubscriptionDriver>> {
        let inner = self.inner.subscription(spec).await?;
        if !self.faults.applies(&spec.name) {
            return Ok(inner);
        }
        Ok(Arc::new(FaultySubscription { inner, faults: self.faults.clone(), name: spec.name.clone() }))
    }
    fn admin(&self) -> Option<Arc<dyn tidings_core::admin::Admin>> {
        self.inner.admin()
    }
    fn api_calls(&self) -> Option<&tidings_core::backend::calls::ApiCalls> {
        self.inner.api_calls()
    }
}

#[derive(Debug)]
struct FaultySubscription {
    inner: Arc<dyn SubscriptionDriver>,
    faults: Arc<InboxFaults>,
    name: String,
}

#[async_trait]
impl SubscriptionDriver for FaultySubscription {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        let got = self.inner.receive(max, wait).await?;
        *self.faults.by_subscription.lock().unwrap().entry(self.name.clone()).or_default() += got.len() as u64;
        let mut received = self.faults.received.lock().unwrap();
        let mut first = self.faults.first.lock().unwrap();
        for m in &got {
            let n = received.entry(m.id.clone()).or_default();
            *n += 1;
            if *n == 1 {
                first.insert(m.ack_id.clone());
            }
        }
        Ok(got)
    }

    async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
        let f = &self.faults;
        let every = f.lose_every_nth_ack.load(SeqCst);
        let lose_first = f.lose_first_acks.load(SeqCst);
        let mut kept = Vec::with_capacity(ids.len());
        for id in ids {
            let n = f.acks.fetch_add(1, SeqCst) + 1;
            let first = f.first.lock().unwrap().remove(&id);
            if (lose_first && first) || (every > 0 && n % every == 0) {
                f.lost_acks.fetch_add(1, SeqCst);
            } else {
                kept.push(id);
            }
        }
        if kept.is_empty() {
            return Ok(());
        }
        self.inner.ack(kept).await
    }

    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()> {
        self.inner.nack(items).await
    }

    async fn extend_lease(&self, ids: Vec<AckId>, by: Duration) -> Result<()> {
        if self.faults.lose_extensions.load(SeqCst) {
            self.faults.lost_extensions.fetch_add(ids.len() as u64, SeqCst);
            return Ok(());
        }
        self.inner.extend_lease(ids, by).await
    }

    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()> {
        self.inner.dead_letter(items).await
    }

    fn dead_letter_queue(self: Arc<Self>) -> Option<Arc<dyn DeadLetters>> {
        self.inner.clone().dead_letter_queue()
    }

    async fn requeue(&self, messages: Vec<ReceivedMessage>) -> Result<()> {
        self.inner.requeue(messages).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }

    async fn backlog(&self) -> Result<Option<u64>> {
        self.inner.backlog().await
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The two databases.

/// The PostgreSQL server of the tests: `DATABASE_URL`, or the machine's default.
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The bus's own database, where its settings name one: `[sqlite] path`, `[postgres] url`.
#[derive(serde::Deserialize, Default)]
struct BusDatabase {
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    url: Option<String>,
}

/// A database the inbox cases run on, with the few statements they need.
#[async_trait]
pub trait TestDatabase: InboxDatabase {
    /// `sqlite` or `postgres` (also the name of a SQL bus on this dialect).
    const KIND: &'static str;
    /// A pool on the bus's own database when the bus is a SQL one of this dialect (`true`), else on a fresh one.
    async fn open(bus: &Bus) -> (sqlx::Pool<Self>, bool, Option<PathBuf>);
    fn inbox(pool: sqlx::Pool<Self>) -> Inbox<Self>;
    async fn run(pool: &sqlx::Pool<Self>, sql: &str);
    /// Records a handler's effect: one row per (subscription, n), never unique, so duplicates can be counted.
    async fn record(conn: &mut Self::Connection, table: &str, sub: &str, n: u64, id: &str) -> sqlx::Result<()>;
    /// The effects: (subscription, n) per row.
    async fn effects(pool: &sqlx::Pool<Self>, table: &str) -> Vec<(String, i64)>;
    /// Inbox rows of message `id`.
    async fn inbox_rows(pool: &sqlx::Pool<Self>, table: &str, id: &str) -> i64;
    /// Inbox rows of subscription `name` (its resource name ends in `--<name>`).
    async fn committed(pool: &sqlx::Pool<Self>, table: &str, name: &str) -> i64;
    async fn publish_out(
        outbox: &Outbox<Self>,
        conn: &mut Self::Connection,
        topic: &Topic<Event>,
        event: &Event,
    ) -> Result<MessageId>;
    /// Creates the outbox's table and starts its relay.
    async fn relay(outbox: &Outbox<Self>) -> tidings_outbox::RelayHandle;
}

/// Implements [`TestDatabase`] for `$db`: `open` and `inbox` are given, the statements are the same.
macro_rules! test_database {
    ($db:ty, $kind:literal, |$bus:ident| $open:block, |$pool:ident| $inbox:expr) => {
        #[async_trait]
        impl TestDatabase for $db {
            const KIND: &'static str = $kind;

            async fn open($bus: &Bus) -> (sqlx::Pool<Self>, bool, Option<PathBuf>) $open

            fn inbox($pool: sqlx::Pool<Self>) -> Inbox<Self> {
                $inbox
            }

            async fn run(pool: &sqlx::Pool<Self>, sql: &str) {
                sqlx::query(sql).execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            }

            async fn record(
                conn: &mut Self::Connection,
                table: &str,
                sub: &str,
                n: u64,
                id: &str,
            ) -> sqlx::Result<()> {
                sqlx::query(&format!("INSERT INTO {table} (subscription, n, message_id) VALUES ($1, $2, $3)"))
                    .bind(sub)
                    .bind(n as i64)
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .map(drop)
            }

            async fn effects(pool: &sqlx::Pool<Self>, table: &str) -> Vec<(String, i64)> {
                sqlx::query_as(&format!("SELECT subscription, n FROM {table}")).fetch_all(pool).await.unwrap()
            }

            async fn inbox_rows(pool: &sqlx::Pool<Self>, table: &str, id: &str) -> i64 {
                sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE message_id = $1"))
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }

            async fn committed(pool: &sqlx::Pool<Self>, table: &str, name: &str) -> i64 {
                sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE subscription LIKE $1"))
                    .bind(format!("%--{name}"))
                    .fetch_one(pool)
                    .await
                    .unwrap()
            }

            async fn publish_out(
                outbox: &Outbox<Self>,
                conn: &mut Self::Connection,
                topic: &Topic<Event>,
                event: &Event,
            ) -> Result<MessageId> {
                outbox.publish(conn, topic, event).await
            }

            async fn relay(outbox: &Outbox<Self>) -> tidings_outbox::RelayHandle {
                outbox.migrate().await.expect("create the outbox table");
                outbox.relay().spawn()
            }
        }
    };
}

test_database!(
    sqlx::Sqlite,
    "sqlite",
    |bus| {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
        let same = bus.backend_name() == "sqlite";
        let (path, remove) = match same {
            true => {
                let db: BusDatabase = bus.settings().section("sqlite").unwrap_or_default();
                (db.path.unwrap_or_else(|| PathBuf::from(".tidings/bus.db")), None)
            }
            false => {
                let p = std::env::temp_dir().join(format!("tidings-inbox-conformance-{}.db", unique()));
                (p.clone(), Some(p))
            }
        };
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A slow handler holds the write lock for its whole transaction; another waits for it.
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await.expect("open SQLite");
        (pool, same, remove)
    },
    |pool| Inbox::sqlite(pool)
);

test_database!(
    sqlx::Postgres,
    "postgres",
    |bus| {
        let same = bus.backend_name() == "postgres";
        let url = match same {
            true => {
                bus.settings().section::<BusDatabase>("postgres").ok().and_then(|d| d.url).unwrap_or_else(postgres_url)
            }
            false => postgres_url(),
        };
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the inbox cases need PostgreSQL at DATABASE_URL={url} ({e}). Start one, e.g. `pg_ctlcluster \
                 --skip-systemctl-redirect $(ls /etc/postgresql) main start` (trust auth, database `test`)"
                )
            });
        (pool, same, None)
    },
    |pool| Inbox::postgres(pool)
);

fn unique() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 12..].to_string()
}

/// One case's bus (behind the fault layer), inbox and effects table.
struct Env<DB: TestDatabase> {
    bus: Bus,
    faults: Arc<InboxFaults>,
    pool: sqlx::Pool<DB>,
    /// The inbox is on the bus's database (acks in the transaction).
    exact: bool,
    inbox: Inbox<DB>,
    effects: String,
    t: Timing,
    remove: Option<PathBuf>,
}

impl<DB: TestDatabase> Env<DB> {
    async fn new<H: Harness>(h: &H, faulty: &[&str]) -> Self {
        let (bus, t) = (h.bus().await, h.timing());
        let faults: Arc<InboxFaults> = Arc::default();
        faults.only.lock().unwrap().extend(faulty.iter().map(|s| s.to_string()));
        let bus = faults.on(&bus);
        let (pool, exact, remove) = DB::open(&bus).await;
        let suffix = unique();
        let effects = format!("inbox_effects_{suffix}");
        DB::run(
            &pool,
            &format!("CREATE TABLE {effects} (subscription TEXT NOT NULL, n BIGINT NOT NULL, message_id TEXT)"),
        )
        .await;
        let inbox = DB::inbox(pool.clone()).with_table(&format!("inbox_{suffix}")).unwrap();
        Env { bus, faults, pool, exact, inbox, effects, t, remove }
    }

    fn mode(&self) -> &'static str {
        if self.exact {
            "exact"
        } else {
            "window"
        }
    }

    /// Effects per subscription: n -> how many times.
    async fn effects(&self) -> BTreeMap<String, BTreeMap<i64, u32>> {
        let mut out: BTreeMap<String, BTreeMap<i64, u32>> = BTreeMap::new();
        for (sub, n) in DB::effects(&self.pool, &self.effects).await {
            *out.entry(sub).or_default().entry(n).or_default() += 1;
        }
        out
    }

    async fn distinct_effects(&self, sub: &str) -> usize {
        self.effects().await.get(sub).map_or(0, BTreeMap::len)
    }

    /// The messages of subscription `sub` whose transaction committed (its inbox rows), and its deliveries that
    /// did not run the handler (`entered`: how many did), which the inbox skipped.
    async fn counted(&self, sub: &str, entered: &AtomicU64) -> (u64, u64) {
        let committed = DB::committed(&self.pool, self.inbox.table(), sub).await.max(0) as u64;
        (committed, self.faults.received(sub).saturating_sub(entered.load(SeqCst)))
    }

    /// Publishes messages 0..n from 4 concurrent tasks, waits until subscriptions `a` and `b` both have all their
    /// effects (`false` if not within the patience), then until `subs` are quiet: copies still on their way (lost
    /// acks come back after the ack deadline) are skipped, and land.
    async fn run_ledger(&self, tp: &Topic<Event>, n: u64, subs: &[tidings_core::Subscription]) -> bool {
        let t = self.t;
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let (bus, tp) = (self.bus.clone(), Topic::<Event>::new(tp.name(), tp.config()));
            tasks.push(tokio::spawn(async move {
                for i in (w..n).step_by(4) {
                    // On a SQLite bus with the inbox on its file, handlers' transactions hold the file's write lock,
                    // and a publish that waited `sqlite.busy_timeout` for it fails (before writing): publish again.
                    let mut tries = 0;
                    while let Err(e) = tp.publish(&bus, &Event::new(i)).await {
                        tries += 1;
                        assert!(tries < 20 && bus.backend_name() == "sqlite", "publish {i}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let all_there = eventually(t.patience * 6, || async {
            self.distinct_effects("a").await == n as usize && self.distinct_effects("b").await == n as usize
        })
        .await;
        for sub in subs {
            let _ = sub.wait_quiet(t.ack_deadline * 2 + t.max_backoff, t.patience).await;
        }
        all_there
    }

    async fn finish(self) {
        self.bus.shutdown(self.t.patience).await;
        let table = self.inbox.table().to_string();
        for t in [table.as_str(), self.effects.as_str()] {
            DB::run(&self.pool, &format!("DROP TABLE IF EXISTS {t}")).await;
        }
        self.pool.close().await;
        if let Some(p) = self.remove {
            for end in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{end}", p.display()));
            }
        }
    }
}

/// Polls `f` every 20 ms until it holds or `patience` passes.
async fn eventually<F: std::future::Future<Output = bool>>(patience: Duration, mut f: impl FnMut() -> F) -> bool {
    let end = Instant::now() + patience;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(line: String) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

// ---------------------------------------------------------------------------------------------------------------
// The cases.

/// The ledger through the inbox: two subscriptions of one topic record each message's effect in the handler's
/// transaction while handlers fail after writing (10 %), panic after writing (1 %) and run past the ack deadline
/// with their lease extensions lost (2 %, so a second copy reaches another handler while the first still runs), on
/// their first two attempts, and one ack in five is lost (a crash between commit and ack). Every message's effect is
/// there exactly once in each subscription, nothing is lost, and no two copies both committed.
async fn ledger<H: Harness, DB: TestDatabase>(h: &H) {
    let _exclusive = super::EXCLUSIVE.lock().await;
    quiet_injected_panics();
    let env = Env::<DB>::new(h, &[]).await;
    env.faults.lose_every_nth_ack.store(5, SeqCst);
    env.faults.lose_extensions.store(true, SeqCst);
    let (t, n) = (env.t, 200u64);
    let tp = topic::<Event>("inbox-ledger", TopicConfig::at_least_once());
    let retry = RetryPolicy::new(t.min_backoff, t.max_backoff).with_max_retries(10);
    let cfg = SubscriptionConfig::DEFAULT.with_ack_deadline(t.ack_deadline).with_max_concurrency(8).with_retry(retry);
    let slow = t.ack_deadline.mul_f64(1.5);
    let calls: Arc<[AtomicU64; 2]> = Arc::default();
    let (failures, panics, slows) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut subs = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let (effects, salt) = (env.effects.clone(), i as u64 * 7919);
        let (calls, failures, panics, slows) = (calls.clone(), failures.clone(), panics.clone(), slows.clone());
        let sub = env
            .inbox
            .subscribe(&env.bus, &tp, name, cfg, move |m: Message<Event>, mut tx| {
                let (effects, id) = (effects.clone(), m.id().to_string());
                let (calls, failures, panics, slows) = (calls.clone(), failures.clone(), panics.clone(), slows.clone());
                async move {
                    calls[i].fetch_add(1, SeqCst);
                    DB::record(&mut tx, &effects, name, m.n, &id).await?;
                    if m.attempt() <= 2 {
                        let r = roll(m.n, m.attempt(), salt);
                        if r < 10 {
                            panics.fetch_add(1, SeqCst);
                            panic!("injected panic on {} after its write", m.n);
                        }
                        if r < 110 {
                            failures.fetch_add(1, SeqCst);
                            return Err(HandlerError::retry("injected failure after the write"));
                        }
                        if r < 130 {
                            slows.fetch_add(1, SeqCst);
                            tokio::time::sleep(slow).await;
                        }
                    }
                    Ok(tx)
                }
            })
            .await
            .expect("subscribe through the inbox");
        subs.push(sub);
    }
    let all_there = env.run_ledger(&tp, n, &subs).await;
    let effects = env.effects().await;
    let mut skipped_total = 0;
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let seen = effects.get(name).cloned().unwrap_or_default();
        let missing: Vec<u64> = (0..n).filter(|i| !seen.contains_key(&(*i as i64))).collect();
        let duplicates: u32 = seen.values().map(|c| c - 1).sum();
        let (processed, skipped) = env.counted(name, &calls[i]).await;
        skipped_total += skipped;
        report(format!(
            "INBOX LEDGER backend={} inbox={} mode={} subscription={name} published={n} effects={} \
             duplicate_effects={duplicates} missing={} processed={processed} skipped={skipped} handler_calls={} \
             failures={} panics={} slow={} lost_acks={} lost_extensions={}",
            env.bus.backend_name(),
            DB::KIND,
            env.mode(),
            seen.values().sum::<u32>(),
            missing.len(),
            calls[i].load(SeqCst),
            failures.load(SeqCst),
            panics.load(SeqCst),
            slows.load(SeqCst),
            env.faults.lost_acks.load(SeqCst),
            env.faults.lost_extensions.load(SeqCst),
        ));
        assert!(
            missing.is_empty(),
            "{name}: {} messages have no effect (lost), e.g. {:?}",
            missing.len(),
            missing.first()
        );
        assert_eq!(duplicates, 0, "{name}: a message's effect happened more than once: {seen:?}");
        assert_eq!(processed, n, "{name}: one commit per message ({} skipped)", skipped);
    }
    assert!(all_there, "every effect arrived within the patience");
    assert!(env.faults.lost_acks.load(SeqCst) > 0, "the fault layer lost acks");
    if !env.exact {
        assert!(skipped_total > 0, "lost acks were redelivered and skipped");
    }
    env.finish().await;
}

/// A handler that publishes through the outbox inside the inbox transaction publishes once per message: the first
/// ack of each upstream delivery is lost, so each is redelivered (window mode) and skipped, and the relay publishes
/// one downstream message per upstream one.
async fn outbox_publish_happens_once<H: Harness, DB: TestDatabase>(h: &H) {
    let env = Env::<DB>::new(h, &["forwarder"]).await;
    env.faults.lose_first_acks.store(true, SeqCst);
    let t = env.t;
    let (up, down) = (
        topic::<Event>("inbox-up", TopicConfig::at_least_once()),
        topic::<Event>("inbox-down", TopicConfig::at_least_once()),
    );
    let outbox_table = format!("outbox_{}", unique());
    let outbox = Outbox::new(env.pool.clone(), env.bus.clone()).with_table(&outbox_table).unwrap();
    let seen: Arc<Mutex<Vec<(MessageId, u64)>>> = Arc::default();
    let s = seen.clone();
    let cfg = SubscriptionConfig::DEFAULT
        .with_ack_deadline(t.ack_deadline)
        .with_retry(RetryPolicy::new(t.min_backoff, t.max_backoff));
    env.bus
        .subscribe(&down, "downstream", cfg, move |m: Message<Event>| {
            s.lock().unwrap().push((m.id().clone(), m.n));
            async { Ok(()) }
        })
        .await
        .unwrap();
    let relay = DB::relay(&outbox).await;
    let (o, d, effects) = (outbox.clone(), Topic::<Event>::new(down.name(), down.config()), env.effects.clone());
    let entered = Arc::new(AtomicU64::new(0));
    let e = entered.clone();
    let forwarder = env
        .inbox
        .subscribe(&env.bus, &up, "forwarder", cfg, move |m: Message<Event>, mut tx| {
            let (o, d, effects) = (o.clone(), Topic::<Event>::new(d.name(), d.config()), effects.clone());
            e.fetch_add(1, SeqCst);
            async move {
                DB::record(&mut tx, &effects, "forwarder", m.n, m.id().as_str()).await?;
                DB::publish_out(&o, &mut tx, &d, &Event::new(m.n + 100)).await?;
                Ok(tx)
            }
        })
        .await
        .unwrap();
    for i in 0..3 {
        up.publish(&env.bus, &Event::new(i)).await.unwrap();
    }
    let distinct = || seen.lock().unwrap().iter().map(|(id, _)| id.clone()).collect::<HashSet<_>>().len();
    assert!(wait_until(t.patience * 2, || distinct() >= 3).await, "the three downstream messages arrived");
    if !env.exact {
        assert!(
            eventually(t.patience * 2, || async { env.counted("forwarder", &entered).await.1 >= 3 }).await,
            "each upstream message came back after its lost ack and was skipped: {:?}",
            env.counted("forwarder", &entered).await
        );
    }
    let _ = forwarder.wait_quiet(t.ack_deadline * 2 + t.max_backoff, t.patience).await;
    tokio::time::sleep(t.max_backoff).await;
    let relayed = relay.shutdown().await;
    let (processed, skipped) = env.counted("forwarder", &entered).await;
    let downstream: Vec<u64> = {
        let mut v: Vec<u64> = seen.lock().unwrap().iter().map(|(_, n)| *n).collect();
        v.sort_unstable();
        v
    };
    report(format!(
        "INBOX OUTBOX backend={} inbox={} mode={} upstream=3 processed={processed} skipped={skipped} lost_acks={} \
         relayed={relayed} downstream={downstream:?} downstream_ids={}",
        env.bus.backend_name(),
        DB::KIND,
        env.mode(),
        env.faults.lost_acks.load(SeqCst),
        distinct()
    ));
    assert_eq!(relayed, 3, "the outbox relayed one message per upstream message");
    assert_eq!(distinct(), 3, "three downstream messages, whatever was redelivered upstream");
    assert_eq!(processed, 3, "one commit per upstream message");
    let effects = env.effects().await;
    assert_eq!(effects.get("forwarder").map(|m| m.values().sum::<u32>()), Some(3), "{effects:?}");
    for t in [outbox_table.clone(), format!("{outbox_table}_relay")] {
        DB::run(&env.pool, &format!("DROP TABLE IF EXISTS {t}")).await;
    }
    env.finish().await;
}

/// Two copies of one message at once (the first handler runs past the ack deadline with its lease extensions lost,
/// and holds its transaction open until the broker has handed the message out again): they serialize on the
/// message's inbox row, one commits and the other is skipped; never both. (A SQLite bus with the inbox on its own
/// file cannot hand out the second copy: the first transaction holds the file's write lock, the delivery row goes
/// with its commit; there the first handler holds it for twice the ack deadline.)
async fn concurrent_copies_never_both_commit<H: Harness, DB: TestDatabase>(h: &H) {
    let env = Env::<DB>::new(h, &["copies"]).await;
    env.faults.lose_extensions.store(true, SeqCst);
    let t = env.t;
    let tp = topic::<Event>("inbox-copies", TopicConfig::at_least_once());
    let entered = Arc::new(AtomicU64::new(0));
    let single_writer = env.exact && DB::KIND == "sqlite";
    let (e, effects, faults) = (entered.clone(), env.effects.clone(), env.faults.clone());
    let cfg = SubscriptionConfig::DEFAULT
        .with_ack_deadline(t.ack_deadline)
        .with_retry(RetryPolicy::new(t.min_backoff, t.max_backoff));
    let sub = env
        .inbox
        .subscribe(&env.bus, &tp, "copies", cfg, move |m: Message<Event>, mut tx| {
            let (e, effects, faults) = (e.clone(), effects.clone(), faults.clone());
            async move {
                e.fetch_add(1, SeqCst);
                DB::record(&mut tx, &effects, "copies", m.n, m.id().as_str()).await?;
                if single_writer {
                    tokio::time::sleep(t.ack_deadline * 2).await;
                } else {
                    // Past the ack deadline, until the second copy is out (however slow the broker is today).
                    tokio::time::sleep(t.ack_deadline).await;
                    wait_until(t.patience * 2, || faults.received("copies") >= 2).await;
                }
                Ok(tx)
            }
        })
        .await
        .unwrap();
    tp.publish(&env.bus, &Event::new(1)).await.unwrap();
    let settled = eventually(t.patience * 3, || async {
        let (processed, skipped) = env.counted("copies", &entered).await;
        processed >= 1 && (single_writer || skipped >= 1)
    })
    .await;
    let _ = sub.wait_quiet(t.ack_deadline * 2 + t.max_backoff, t.patience).await;
    let (processed, skipped) = env.counted("copies", &entered).await;
    let effects = env.effects().await;
    let count = effects.get("copies").map_or(0, |m| m.values().sum::<u32>());
    report(format!(
        "INBOX COPIES backend={} inbox={} mode={} handler_entered={} processed={processed} skipped={skipped} \
         effects={count} lost_extensions={}",
        env.bus.backend_name(),
        DB::KIND,
        env.mode(),
        entered.load(SeqCst),
        env.faults.lost_extensions.load(SeqCst)
    ));
    assert!(
        settled,
        "a second copy came while the first ran, and was skipped: processed {processed}, skipped {skipped}"
    );
    assert_eq!(count, 1, "the effect happened once");
    assert_eq!(processed, 1, "never both copies committed");
    assert_eq!(entered.load(SeqCst), 1, "the second copy waited on the first's inbox row, then was skipped");
    env.finish().await;
}

/// A consumer that committed and then lost its ack (a crash between the two): on a broker, the message comes back
/// after its ack deadline and is skipped; on a SQL bus with the inbox on its database, the delivery was acked in
/// the transaction and nothing comes back.
async fn lost_ack_after_commit<H: Harness, DB: TestDatabase>(h: &H) {
    let env = Env::<DB>::new(h, &["lost-ack"]).await;
    env.faults.lose_first_acks.store(true, SeqCst);
    let t = env.t;
    let tp = topic::<Event>("inbox-lost-ack", TopicConfig::at_least_once());
    let entered = Arc::new(AtomicU64::new(0));
    let (e, effects) = (entered.clone(), env.effects.clone());
    let cfg = SubscriptionConfig::DEFAULT
        .with_ack_deadline(t.ack_deadline)
        .with_retry(RetryPolicy::new(t.min_backoff, t.max_backoff));
    let sub = env
        .inbox
        .subscribe(&env.bus, &tp, "lost-ack", cfg, move |m: Message<Event>, mut tx| {
            let (e, effects) = (e.clone(), effects.clone());
            async move {
                e.fetch_add(1, SeqCst);
                DB::record(&mut tx, &effects, "lost-ack", m.n, m.id().as_str()).await?;
                Ok(tx)
            }
        })
        .await
        .unwrap();
    for i in 0..3 {
        tp.publish(&env.bus, &Event::new(i)).await.unwrap();
    }
    assert!(
        eventually(t.patience * 2, || async { env.counted("lost-ack", &entered).await.0 >= 3 }).await,
        "the three committed"
    );
    if env.exact {
        // The commits acked: with every ack of the runtime lost, the deliveries are gone as soon as the inbox rows
        // are there (a copy handed out again because a lease ran out before its commit, on a loaded machine, is
        // skipped and is no redelivery after the commit: its row went with that commit too).
        assert_eq!(
            sub.backlog().await.unwrap(),
            Some(0),
            "acked in the transaction: the commit settled the deliveries"
        );
        // Whatever would come back comes within the ack deadline and a backoff.
        tokio::time::sleep(t.ack_deadline * 3 + t.max_backoff).await;
    } else {
        assert!(
            eventually(t.patience * 2, || async { env.counted("lost-ack", &entered).await.1 >= 3 }).await,
            "each message came back after its lost ack: {:?}",
            env.counted("lost-ack", &entered).await
        );
    }
    let _ = sub.wait_quiet(t.ack_deadline + t.max_backoff, t.patience).await;
    let (processed, skipped) = env.counted("lost-ack", &entered).await;
    let effects = env.effects().await;
    let per_n: Vec<u32> = effects.get("lost-ack").map(|m| m.values().copied().collect()).unwrap_or_default();
    let backlog = sub.backlog().await.ok().flatten();
    report(format!(
        "INBOX LOST ACK backend={} inbox={} mode={} lost_acks={} handler_entered={} processed={processed} \
         skipped={skipped} effects_per_message={per_n:?} backlog={backlog:?}",
        env.bus.backend_name(),
        DB::KIND,
        env.mode(),
        env.faults.lost_acks.load(SeqCst),
        entered.load(SeqCst)
    ));
    assert!(env.faults.lost_acks.load(SeqCst) >= 3, "the first acks were lost");
    assert_eq!(per_n, vec![1, 1, 1], "each message's effect once");
    assert_eq!((processed, entered.load(SeqCst)), (3, 3), "the handler ran once per message");
    if env.exact {
        assert_eq!(backlog, Some(0), "nothing left to redeliver");
    } else {
        assert!(skipped >= 3, "the copies that came back were skipped");
    }
    env.finish().await;
}

/// A message whose handler failed until it was dead-lettered has no inbox row (its transaction rolled back), so
/// redriving it runs the handler, which then commits.
async fn redriven_dead_letter_is_processed<H: Harness, DB: TestDatabase>(h: &H) {
    let env = Env::<DB>::new(h, &[]).await;
    let t = env.t;
    let tp = topic::<Event>("inbox-redrive", TopicConfig::at_least_once());
    let fixed = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicU64::new(0));
    let (f, e, effects) = (fixed.clone(), entered.clone(), env.effects.clone());
    let cfg = SubscriptionConfig::DEFAULT
        .with_ack_deadline(t.ack_deadline)
        .with_retry(RetryPolicy::new(t.min_backoff, t.max_backoff).with_max_retries(1));
    let sub = env
        .inbox
        .subscribe(&env.bus, &tp, "redriven", cfg, move |m: Message<Event>, mut tx| {
            let (f, effects) = (f.clone(), effects.clone());
            e.fetch_add(1, SeqCst);
            async move {
                DB::record(&mut tx, &effects, "redriven", m.n, m.id().as_str()).await?;
                if !f.load(SeqCst) {
                    return Err(HandlerError::retry("the downstream is down"));
                }
                Ok(tx)
            }
        })
        .await
        .unwrap();
    let id = tp.publish(&env.bus, &Event::new(1)).await.unwrap();
    let dead = wait_dead_letters(&sub, 1, t.patience * 2).await;
    assert_eq!(dead.len(), 1, "dead-lettered after its retries");
    assert_eq!(DB::inbox_rows(&env.pool, env.inbox.table(), id.as_str()).await, 0, "a failed message has no inbox row");
    assert!(env.effects().await.is_empty(), "its writes rolled back");
    fixed.store(true, SeqCst);
    assert_eq!(sub.redrive_all().await.unwrap(), 1);
    assert!(
        eventually(t.patience * 2, || async { env.counted("redriven", &entered).await.0 >= 1 }).await,
        "the redriven message ran"
    );
    let (processed, skipped) = env.counted("redriven", &entered).await;
    assert_eq!((processed, skipped), (1, 0), "processed, not skipped");
    assert_eq!(DB::inbox_rows(&env.pool, env.inbox.table(), id.as_str()).await, 1);
    assert_eq!(env.effects().await.get("redriven").map(|m| m.values().sum::<u32>()), Some(1));
    report(format!(
        "INBOX REDRIVE backend={} inbox={} mode={} dead_lettered=1 inbox_row_before_redrive=0 processed_after={processed}",
        env.bus.backend_name(),
        DB::KIND,
        env.mode()
    ));
    env.finish().await;
}

/// The ledger through the inbox with a batch handler (batches of up to 10, one transaction each): two subscriptions
/// of one topic record each message's effect in the batch's transaction while, on the first two attempts, a message
/// is given a retry without a write (10 %, so its inbox row must not commit), and a batch fails after its writes
/// (8 %), panics after them (2 %) or runs past the ack deadline with its lease extensions lost (3 %, so copies of its
/// messages reach another batch while it runs); one ack in five is lost. Every message's effect is there exactly
/// once in each subscription (0 duplicates, 0 missing), and one inbox row per message committed.
async fn batch_ledger<H: Harness, DB: TestDatabase>(h: &H) {
    let _exclusive = super::EXCLUSIVE.lock().await;
    quiet_injected_panics();
    let env = Env::<DB>::new(h, &[]).await;
    env.faults.lose_every_nth_ack.store(5, SeqCst);
    env.faults.lose_extensions.store(true, SeqCst);
    let (t, n) = (env.t, 200u64);
    let tp = topic::<Event>("inbox-batch-ledger", TopicConfig::at_least_once());
    let retry = RetryPolicy::new(t.min_backoff, t.max_backoff).with_max_retries(10);
    let cfg = SubscriptionConfig::DEFAULT
        .with_ack_deadline(t.ack_deadline)
        .with_max_concurrency(4)
        .with_retry(retry)
        .with_max_messages(10)
        .with_max_wait(Duration::from_millis(100));
    let slow = t.ack_deadline.mul_f64(1.5);
    // Injected: per-message retries, batch failures, batch panics, slow batches; and the largest batch seen.
    let injected: Arc<[AtomicU64; 5]> = Arc::default();
    let mut subs = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let (effects, salt, injected) = (env.effects.clone(), i as u64 * 7919, injected.clone());
        let sub = env
            .inbox
            .subscribe_batch(&env.bus, &tp, name, cfg, move |batch: Vec<Message<Event>>, mut tx| {
                let (effects, injected) = (effects.clone(), injected.clone());
                async move {
                    injected[4].fetch_max(batch.len() as u64, SeqCst);
                    let mut results = Vec::with_capacity(batch.len());
                    for m in &batch {
                        if m.attempt() <= 2 && roll(m.n, m.attempt(), salt) < 100 {
                            injected[0].fetch_add(1, SeqCst);
                            results.push(Err(HandlerError::retry("injected retry of one message, before its write")));
                            continue;
                        }
                        DB::record(&mut tx, &effects, name, m.n, m.id().as_str()).await?;
                        results.push(Ok(()));
                    }
                    let first = &batch[0];
                    if first.attempt() <= 2 {
                        let r = roll(first.n, first.attempt(), salt ^ 0xBA7C);
                        if r < 20 {
                            injected[2].fetch_add(1, SeqCst);
                            panic!("injected panic in a batch after its writes");
                        }
                        if r < 100 {
                            injected[1].fetch_add(1, SeqCst);
                            return Err(HandlerError::retry("injected failure of a batch after its writes"));
                        }
                        if r < 130 {
                            injected[3].fetch_add(1, SeqCst);
                            tokio::time::sleep(slow).await;
                        }
                    }
                    Ok((results.into_iter().collect::<BatchOutcome>(), tx))
                }
            })
            .await
            .expect("subscribe a batch handler through the inbox");
        subs.push(sub);
    }
    let all_there = env.run_ledger(&tp, n, &subs).await;
    let effects = env.effects().await;
    let injected: Vec<u64> = injected.iter().map(|a| a.load(SeqCst)).collect();
    for name in ["a", "b"] {
        let seen = effects.get(name).cloned().unwrap_or_default();
        let missing: Vec<u64> = (0..n).filter(|i| !seen.contains_key(&(*i as i64))).collect();
        let duplicates: u32 = seen.values().map(|c| c - 1).sum();
        let processed = DB::committed(&env.pool, env.inbox.table(), name).await;
        report(format!(
            "INBOX BATCH LEDGER backend={} inbox={} mode={} sub={name} messages={n} effects={} duplicates={duplicates} \
             missing={} inbox_rows={processed} (both subscriptions:) retried_messages={} failed_batches={} \
             panicked_batches={} slow_batches={} largest_batch={} lost_acks={} lost_extensions={}",
            env.bus.backend_name(),
            DB::KIND,
            env.mode(),
            seen.len(),
            missing.len(),
            injected[0],
            injected[1],
            injected[2],
            injected[3],
            injected[4],
            env.faults.lost_acks.load(SeqCst),
            env.faults.lost_extensions.load(SeqCst),
        ));
        assert!(missing.is_empty(), "{name}: {} messages have no effect, e.g. {:?}", missing.len(), missing.first());
        assert_eq!(duplicates, 0, "{name}: a message's effect happened more than once: {seen:?}");
        assert_eq!(processed, n as i64, "{name}: one inbox row per message");
    }
    assert!(all_there, "every effect arrived within the patience");
    assert!(injected[0] > 0 && injected[1] > 0, "per-message retries and batch failures were injected: {injected:?}");
    assert!(injected[4] > 1, "messages were handled in batches: {injected:?}");
    assert!(env.faults.lost_acks.load(SeqCst) > 0, "the fault layer lost acks");
    env.finish().await;
}

/// One batch, four messages, mixed outcomes: 0 and 1 acked (their effects written), 2 retried and 3 dead-lettered
/// (neither written). Only 0's and 1's inbox rows commit: 2 comes back and is handed over again (its row did not
/// commit), and is processed then; 3 is in the dead-letter queue with no row. A republish of 0 (its id) is not handed
/// over again.
async fn batch_commits_only_acked_rows<H: Harness, DB: TestDatabase>(h: &H) {
    let env = Env::<DB>::new(h, &[]).await;
    let t = env.t;
    let tp = topic::<Event>("inbox-batch-mixed", TopicConfig::at_least_once());
    let cfg = SubscriptionConfig::DEFAULT
        .with_ack_deadline(t.ack_deadline)
        .with_retry(RetryPolicy::new(t.min_backoff, t.max_backoff).with_max_retries(3))
        .with_max_messages(4)
        .with_max_wait(Duration::from_secs(2));
    // Each call: (n, attempt) of the messages handed over.
    type Calls = Arc<Mutex<Vec<Vec<(u64, u32)>>>>;
    let calls: Calls = Arc::default();
    let (c, effects) = (calls.clone(), env.effects.clone());
    let sub = env
        .inbox
        .subscribe_batch(&env.bus, &tp, "mixed", cfg, move |batch: Vec<Message<Event>>, mut tx| {
            let (c, effects) = (c.clone(), effects.clone());
            async move {
                c.lock().unwrap().push(batch.iter().map(|m| (m.n, m.attempt())).collect());
                let mut results = Vec::new();
                for m in &batch {
                    let r = match (m.n, m.attempt()) {
                        (2, 1) => Err(HandlerError::retry("not yet")),
                        (3, _) => Err(HandlerError::unrecoverable("refused")),
                        _ => Ok(()),
                    };
                    if r.is_ok() {
                        DB::record(&mut tx, &effects, "mixed", m.n, m.id().as_str()).await?;
                    }
                    results.push(r);
                }
                Ok((BatchOutcome::Each(results), tx))
            }
        })
        .await
        .unwrap();
    let events: Vec<Event> = (0..4).map(Event::new).collect();
    let ids = tp.publish_batch(&env.bus, events.iter().map(|e| (e, PublishOptions::new()))).await.unwrap();
    let dead = wait_dead_letters(&sub, 1, t.patience * 2).await;
    let processed = eventually(t.patience * 2, || async { env.distinct_effects("mixed").await >= 3 }).await;
    let _ = sub.wait_quiet(t.ack_deadline + t.max_backoff, t.patience).await;
    tp.publish_with(&env.bus, &events[0], PublishOptions::new().id(ids[0].clone())).await.unwrap();
    let _ = sub.wait_quiet(t.ack_deadline + t.max_backoff, t.patience).await;
    let mut rows = Vec::new();
    for id in &ids {
        rows.push(DB::inbox_rows(&env.pool, env.inbox.table(), id.as_str()).await);
    }
    let calls = calls.lock().unwrap().clone();
    let effects = env.effects().await.remove("mixed").unwrap_or_default();
    report(format!(
        "INBOX BATCH MIXED backend={} inbox={} mode={} calls={calls:?} inbox_rows={rows:?} effects={effects:?} \
         dead_lettered={}",
        env.bus.backend_name(),
        DB::KIND,
        env.mode(),
        dead.len()
    ));
    assert!(processed, "0, 1 and 2 were processed: {calls:?}");
    assert_eq!(calls.first().map(Vec::len), Some(4), "the four messages went in one batch: {calls:?}");
    let handed = |n: u64| calls.iter().flatten().filter(|(m, _)| *m == n).map(|(_, a)| *a).collect::<Vec<_>>();
    assert_eq!(handed(2), vec![1, 2], "the retried message was handed over again (its row had not committed)");
    assert_eq!(handed(0), vec![1], "an acked message is not handed over again, even republished with its id");
    assert_eq!(handed(1), vec![1]);
    assert_eq!(dead.len(), 1, "the refused message was dead-lettered");
    assert_eq!(dead[0].id, ids[3]);
    assert_eq!(rows, vec![1, 1, 1, 0], "rows of the acked messages only (2's from its retry)");
    assert_eq!(effects, (0..3).map(|n| (n, 1)).collect::<BTreeMap<i64, u32>>(), "each acked message's effect once");
    env.finish().await;
}

/// The two public cases of each generic case: with the inbox on SQLite, and on PostgreSQL.
macro_rules! on_both_databases {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[doc = concat!("`", stringify!($case), "` with the inbox on SQLite.")]
        pub async fn $sqlite<H: Harness>(h: &H) {
            $case::<H, sqlx::Sqlite>(h).await
        }
        #[doc = concat!("`", stringify!($case), "` with the inbox on PostgreSQL.")]
        pub async fn $postgres<H: Harness>(h: &H) {
            $case::<H, sqlx::Postgres>(h).await
        }
    )*};
}

on_both_databases! {
    ledger => inbox_exactly_once_effect_under_faults_sqlite, inbox_exactly_once_effect_under_faults_postgres;
    outbox_publish_happens_once => inbox_outbox_publish_happens_once_sqlite, inbox_outbox_publish_happens_once_postgres;
    concurrent_copies_never_both_commit => inbox_concurrent_copies_never_both_commit_sqlite,
        inbox_concurrent_copies_never_both_commit_postgres;
    lost_ack_after_commit => inbox_lost_ack_after_commit_sqlite, inbox_lost_ack_after_commit_postgres;
    redriven_dead_letter_is_processed => inbox_redriven_dead_letter_is_processed_sqlite,
        inbox_redriven_dead_letter_is_processed_postgres;
    batch_ledger => inbox_batch_exactly_once_effect_under_faults_sqlite,
        inbox_batch_exactly_once_effect_under_faults_postgres;
    batch_commits_only_acked_rows => inbox_batch_commits_only_acked_rows_sqlite,
        inbox_batch_commits_only_acked_rows_postgres;
}
