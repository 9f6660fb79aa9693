//! `tidings doctor`'s permission checks on PostgreSQL (`Admin::permissions`) against a role holding exactly the
//! least-privilege grant of the book's sql.md, "Permissions", on tables an owner provisioned: every check passes (and
//! the operator story runs as that role), and each needed grant revoked fails exactly its object's check, naming the
//! object and the privilege.

mod support;

use std::sync::Arc;

use sqlx::PgPool;
use tidings_core::admin::{Check, Status};
use tidings_core::backend::Backend;
use tidings_core::topology::Topology;
use tidings_core::{Bus, Settings};
use tidings_sql::{PostgresConfig, SqlBackend};

/// The connection URL of `DATABASE_URL`'s server and database as `role` (the local server trusts every role).
fn url_as(role: &str) -> String {
    let url = support::pg_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("postgres://{role}@{host}")
}

/// Roles of earlier runs of this test that did not get to drop theirs, older than an hour.
async fn drop_old_roles(owner: &PgPool) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'tidings\\_test\\_role\\_%'")
            .fetch_all(owner)
            .await
            .unwrap();
    let hour_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 3600;
    for n in names {
        let secs: Option<u64> =
            n.trim_start_matches("tidings_test_role_").split('_').next().and_then(|s| s.parse().ok());
        if secs.is_some_and(|s| s < hour_ago) {
            drop_role(owner, &n).await;
        }
    }
}

async fn drop_role(owner: &PgPool, role: &str) {
    let _ = sqlx::query(&format!("DROP OWNED BY {role}")).execute(owner).await;
    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}")).execute(owner).await;
}

async fn exec(owner: &PgPool, sql: &str) {
    sqlx::query(sql).execute(owner).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn permissions(backend: &SqlBackend) -> Vec<Check> {
    let topology = Topology { backend: "postgres".into(), name_prefix: String::new(), topics: Vec::new() };
    backend.admin().expect("the SQL backend has an operator SPI").permissions(&topology).await
}

/// The checks that did not pass.
fn failed(checks: &[Check]) -> Vec<&Check> {
    checks.iter().filter(|c| c.status != Status::Pass).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_doctor_passes_the_documented_least_privilege_grant() {
    support::require_pg().await;
    let owner = PgPool::connect(&support::pg_url()).await.unwrap();
    drop_old_roles(&owner).await;
    let schema = support::pg_schema();
    let role = format!("tidings_test_role_{}", support::unique());
    exec(&owner, &format!("CREATE ROLE {role} LOGIN")).await;
    // The role is dropped whatever the outcome.
    let outcome = tokio::spawn(least_privilege(owner.clone(), schema.clone(), role.clone())).await;
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&owner).await;
    drop_role(&owner, &role).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&role)
        .fetch_one(&owner)
        .await
        .unwrap();
    owner.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    assert_eq!(left, 0, "role {role} was dropped");
}

async fn least_privilege(owner: PgPool, schema: String, role: String) {
    // The owner (the server's superuser here) provisions: schema, tables, sequences, version row.
    let provisioner = SqlBackend::postgres(PostgresConfig::at(support::pg_url(), &schema)).await.unwrap();
    drop(provisioner);
    let s = &schema;
    // Exactly the book's grant (sql.md, "Permissions"), with `tidings` and `app` replaced.
    let grants = [
        format!("GRANT USAGE ON SCHEMA {s} TO {role}"),
        format!("GRANT SELECT ON {s}.schema_version TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.subscriptions, {s}.deliveries TO {role}"),
        format!("GRANT USAGE ON SEQUENCE {s}.subscriptions_id_seq, {s}.deliveries_seq_seq TO {role}"),
    ];
    for g in &grants {
        exec(&owner, g).await;
    }

    let backend = Arc::new(SqlBackend::postgres(PostgresConfig::at(url_as(&role), s)).await.expect("open as the role"));
    let checks = permissions(&backend).await;
    let mut names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let mut want = vec![
        format!("permissions: schema {s}"),
        format!("permissions: table {s}.subscriptions"),
        format!("permissions: table {s}.deliveries"),
        format!("permissions: table {s}.schema_version"),
        format!("permissions: sequence {s}.subscriptions_id_seq"),
        format!("permissions: sequence {s}.deliveries_seq_seq"),
    ];
    want.sort_unstable();
    assert_eq!(names, want, "one check per object tidings uses: {checks:#?}");
    assert!(failed(&checks).is_empty(), "the documented grant passes every check: {checks:#?}");
    let version = checks.iter().find(|c| c.name.ends_with(".schema_version")).unwrap();
    assert_eq!(version.detail, format!("{role} holds SELECT on it"), "only SELECT is asked of schema_version");
    let deliveries = checks.iter().find(|c| c.name.ends_with(".deliveries")).unwrap();
    assert_eq!(deliveries.detail, format!("{role} holds SELECT, INSERT, UPDATE, DELETE on it"));

    // And the grant is what the application needs: the operator story (register, publish, retry, dead-letter,
    // redrive, purge, delete a subscription) runs as the role.
    let prefix = format!("perm{}-", support::unique().replace('_', "-"));
    let settings = Settings::from_toml(&format!("name_prefix = {prefix:?}")).unwrap();
    let bus = Bus::builder(backend.clone()).settings(settings).build();
    tidings_testkit::conformance::operator_story(&bus, "orders").await;
    bus.shutdown(std::time::Duration::from_secs(5)).await;

    // Each needed grant revoked fails exactly its object's check, naming the object, the privilege and the GRANT.
    let revocations = [
        ("INSERT", "TABLE", format!("{s}.deliveries")),
        ("DELETE", "TABLE", format!("{s}.subscriptions")),
        ("SELECT", "TABLE", format!("{s}.schema_version")),
        ("USAGE", "SEQUENCE", format!("{s}.deliveries_seq_seq")),
        ("USAGE", "SCHEMA", s.to_string()),
    ];
    for (privilege, kind, object) in &revocations {
        exec(&owner, &format!("REVOKE {privilege} ON {kind} {object} FROM {role}")).await;
        let checks = permissions(&backend).await;
        assert_eq!(checks.len(), 6, "{checks:#?}");
        let failed = failed(&checks);
        assert_eq!(failed.len(), 1, "only the check of {object} fails without {privilege}: {checks:#?}");
        let c = failed[0];
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.name, format!("permissions: {} {object}", kind.to_lowercase()), "{c:#?}");
        assert_eq!(
            c.detail,
            format!("{role} lacks {privilege} on {object}: GRANT {privilege} ON {kind} {object} TO {role}"),
            "{c:#?}"
        );
        exec(&owner, &format!("GRANT {privilege} ON {kind} {object} TO {role}")).await;
    }
    assert!(failed(&permissions(&backend).await).is_empty(), "granted again, every check passes");
}
