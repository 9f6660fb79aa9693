//! `tidings doctor` on Pub/Sub: the Pub/Sub service agent's roles on each subscription's dead-letter topic
//! (publisher) and on the subscription itself (subscriber), read with `getIamPolicy`: without them Pub/Sub cannot
//! move a message to the dead-letter topic, the first thing to check when dead-lettering "does not work".

use tidings_core::admin::Check;
use tidings_core::topology::Topology;

use crate::error::code;
use crate::Shared;

/// Members that are the project's Pub/Sub service agent (`service-<project number>@gcp-sa-pubsub...`).
fn is_service_agent(member: &str) -> bool {
    member.starts_with("serviceAccount:service-") && member.ends_with("@gcp-sa-pubsub.iam.gserviceaccount.com")
}

/// Roles that include what the agent needs (`publisher` on the dead-letter topic, `subscriber` on the subscription).
fn grants(role: &str, need: &str) -> bool {
    role == need || role == "roles/pubsub.editor" || role == "roles/pubsub.admin" || role == "roles/owner"
}

async fn check(s: &Shared, what: &str, resource: String, need: &str) -> Check {
    let name = format!("permissions: {what} {resource}");
    match s.iam.get_iam_policy().set_resource(&resource).send().await {
        Ok(policy) => {
            let held =
                policy.bindings.iter().any(|b| grants(&b.role, need) && b.members.iter().any(|m| is_service_agent(m)));
            if held {
                Check::pass(name, format!("the Pub/Sub service agent holds {need} (or a role including it)"))
            } else {
                Check::fail(
                    name,
                    format!(
                        "no binding on it gives the Pub/Sub service agent (service-<project number>@gcp-sa-pubsub.iam.\
                         gserviceaccount.com) {need}, so Pub/Sub cannot dead-letter: grant it (`gcloud pubsub {} \
                         add-iam-policy-binding ...`); a grant on the whole project does not show here",
                        if what.contains("topic") { "topics" } else { "subscriptions" }
                    ),
                )
            }
        }
        Err(e) if s.emulated() || code(&e).as_deref() == Some("Unimplemented") => Check::skipped(
            name,
            format!("not checkable: this endpoint does not serve getIamPolicy (the emulator has no IAM): {e}"),
        ),
        Err(e) => Check::fail(name, format!("getIamPolicy failed: {e}")),
    }
}

/// One check per declared subscription's dead-letter topic and per subscription.
pub async fn permissions(s: &Shared, topology: &Topology) -> Vec<Check> {
    let mut out = Vec::new();
    for t in &topology.topics {
        for sub in &t.subscriptions {
            let p = &s.project;
            let dlq = format!("projects/{p}/topics/{}-dlq", sub.resource);
            out.push(check(s, "dead-letter topic", dlq, "roles/pubsub.publisher").await);
            let source = format!("projects/{p}/subscriptions/{}", sub.resource);
            out.push(check(s, "subscription", source, "roles/pubsub.subscriber").await);
        }
    }
    if out.is_empty() {
        out.push(Check::skipped(
            "permissions",
            "no subscriptions in the topology: the service agent's roles are checked per subscription (--topology FILE)",
        ));
    }
    out
}
