//! The inbox on PostgreSQL as a restricted role: the privileges the book's inbox page ("The table") names are
//! enough, with `provisioning = "verify"` on a table an owner made and with `auto` creating it; a role lacking one of
//! them fails the subscribe with an error naming the role, the table, the privilege and its GRANT.
#![cfg(feature = "postgres")]

mod support;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use support::{config, topic, Job};
use tidings_core::backend::cloud::Provisioning;
use tidings_core::{ErrorKind, Message, PublishOptions};
use tidings_inbox::Inbox;

fn url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A pool on `DATABASE_URL`'s database whose connections find tables in `schema` (as `role`, when given; the local
/// server trusts every role).
async fn pool(role: Option<&str>, schema: &str) -> PgPool {
    let mut opts = PgConnectOptions::from_str(&url()).unwrap().options([("search_path", schema)]);
    if let Some(role) = role {
        opts = opts.username(role);
    }
    PgPoolOptions::new().max_connections(3).connect_with(opts).await.expect("PostgreSQL at DATABASE_URL")
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn bus() -> tidings_core::Bus {
    tidings_core::Bus::new(std::sync::Arc::new(tidings_local::LocalBackend::new()))
}

/// A role and a schema of their own, dropped whatever the test's outcome.
async fn with_role<F, Fut>(f: F)
where
    F: FnOnce(PgPool, String, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let suffix = support::unique();
    let (role, schema) = (format!("tidings_inbox_role_{suffix}"), format!("tidings_inbox_grants_{suffix}"));
    let owner = pool(None, &schema).await;
    exec(&owner, &format!("CREATE ROLE {role} LOGIN")).await;
    exec(&owner, &format!("CREATE SCHEMA {schema}")).await;
    let outcome = tokio::spawn(f(owner.clone(), role.clone(), schema.clone())).await;
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&owner).await;
    let _ = sqlx::query(&format!("DROP OWNED BY {role}")).execute(&owner).await;
    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}")).execute(&owner).await;
    owner.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Subscribes through `inbox` a handler that records each message in `effects`; publishes one message twice (the
/// second time with its id) and checks the effect happened once, then sweeps. Returns the subscribe's error.
async fn run_once(inbox: &Inbox<sqlx::Postgres>, effects: &str) -> tidings_core::Result<()> {
    let bus = bus();
    let t = topic("grants");
    let insert = format!("INSERT INTO {effects} (n, message_id) VALUES ($1, $2)");
    let sub = inbox
        .subscribe(&bus, &t, "s", config(3), move |m: Message<Job>, mut tx| {
            let insert = insert.clone();
            async move {
                sqlx::query(&insert).bind(m.n).bind(m.id().as_str()).execute(&mut *tx).await?;
                Ok(tx)
            }
        })
        .await?;
    let id = t.publish(&bus, &Job { n: 1 }).await.unwrap();
    assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
    t.publish_with(&bus, &Job { n: 1 }, PublishOptions::new().id(id.clone())).await.unwrap();
    assert!(sub.wait_idle(Duration::from_secs(10)).await.unwrap());
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {effects} WHERE message_id = $1"))
        .bind(id.as_str())
        .fetch_one(inbox.pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "the effect happened once");
    assert!(sub.dead_letters(5).await.unwrap().is_empty());
    assert_eq!(inbox.sweep().await.unwrap(), 0, "the sweep runs (nothing expired)");
    bus.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// As the owner: USAGE on the schema for `role`, the effects table (SELECT and INSERT for `role`) and the inbox table
/// from `Inbox::ddl()` (no privileges on it yet).
async fn owner_made_tables(owner: &PgPool, role: &str, schema: &str) {
    exec(owner, &format!("GRANT USAGE ON SCHEMA {schema} TO {role}")).await;
    exec(owner, "CREATE TABLE effects (n BIGINT NOT NULL, message_id TEXT NOT NULL)").await;
    exec(owner, &format!("GRANT SELECT, INSERT ON effects TO {role}")).await;
    for sql in Inbox::postgres(owner.clone()).ddl() {
        exec(owner, &sql).await;
    }
}

/// The page's grants: USAGE on the schema, SELECT, INSERT and DELETE on the table an owner created from
/// `Inbox::ddl()` (provisioning `verify`, and `auto` finding it there); CREATE on the schema for `auto` to create it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_grants_are_enough() {
    with_role(|owner, role, schema| async move {
        owner_made_tables(&owner, &role, &schema).await;
        exec(&owner, &format!("GRANT SELECT, INSERT, DELETE ON tidings_inbox TO {role}")).await;

        let app = pool(Some(&role), &schema).await;
        let verify = Inbox::postgres(app.clone()).with_provisioning(Provisioning::Verify);
        verify.verify().await.unwrap();
        run_once(&verify, "effects").await.unwrap();
        let auto = Inbox::postgres(app.clone()).with_provisioning(Provisioning::Auto);
        run_once(&auto, "effects").await.expect("auto on a table that is there needs no CREATE");

        // auto creates the table with CREATE on the schema; the role owns it then.
        exec(&owner, &format!("GRANT CREATE ON SCHEMA {schema} TO {role}")).await;
        let created = Inbox::postgres(app.clone()).with_table("inbox_created").unwrap();
        run_once(&created, "effects").await.unwrap();
        let made_by: String = sqlx::query_scalar(
            "SELECT tableowner::text FROM pg_tables WHERE schemaname = $1 AND \
                                                 tablename = 'inbox_created'",
        )
        .bind(&schema)
        .fetch_one(&owner)
        .await
        .unwrap();
        assert_eq!(made_by, role);
        app.close().await;
    })
    .await;
}

/// A role lacking SELECT, INSERT or DELETE on the table fails the subscribe (verify and auto) with an error that
/// names the role, the table, the privilege and the GRANT; without USAGE on the schema the table is not found, and
/// the error names it; without CREATE, auto's attempt to create a missing table fails naming the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_privilege_fails_the_subscribe_naming_it() {
    with_role(|owner, role, schema| async move {
        owner_made_tables(&owner, &role, &schema).await;
        let app = pool(Some(&role), &schema).await;
        for lacking in ["SELECT", "INSERT", "DELETE"] {
            exec(&owner, &format!("GRANT SELECT, INSERT, DELETE ON tidings_inbox TO {role}")).await;
            exec(&owner, &format!("REVOKE {lacking} ON tidings_inbox FROM {role}")).await;
            for provisioning in [Provisioning::Verify, Provisioning::Auto] {
                let inbox = Inbox::postgres(app.clone()).with_provisioning(provisioning);
                let e = run_once(&inbox, "effects").await.expect_err("a privilege is missing");
                let text = e.to_string();
                for part in [role.as_str(), "tidings_inbox", lacking, "inbox.html"] {
                    assert!(text.contains(part), "{provisioning:?} without {lacking}: {part:?} missing from {text}");
                }
                assert!(text.contains(&format!("GRANT {lacking} ON tidings_inbox TO {role}")), "{text}");
                assert!(!e.is_retryable(), "{text}");
            }
        }
        // All three back: it works again.
        exec(&owner, &format!("GRANT SELECT, INSERT, DELETE ON tidings_inbox TO {role}")).await;
        run_once(&Inbox::postgres(app.clone()).with_provisioning(Provisioning::Verify), "effects").await.unwrap();

        // No USAGE on the schema: the role cannot see the table.
        exec(&owner, &format!("REVOKE USAGE ON SCHEMA {schema} FROM {role}")).await;
        let inbox = Inbox::postgres(app.clone()).with_provisioning(Provisioning::Verify);
        let e = run_once(&inbox, "effects").await.expect_err("the schema is out of sight");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("tidings_inbox") && e.to_string().contains("USAGE"), "{e}");

        // No CREATE on the schema: auto cannot create a missing table, and says which.
        exec(&owner, &format!("GRANT USAGE ON SCHEMA {schema} TO {role}")).await;
        let inbox = Inbox::postgres(app.clone()).with_table("inbox_never_made").unwrap();
        let e = run_once(&inbox, "effects").await.expect_err("no CREATE on the schema");
        assert!(e.to_string().contains("inbox_never_made") && e.to_string().contains("permission denied"), "{e}");
        app.close().await;
    })
    .await;
}
