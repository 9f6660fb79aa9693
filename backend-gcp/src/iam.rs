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

/// Whether a policy's bindings (role, members) give the service agent `need` or a role including it.
fn agent_holds<'a>(bindings: impl IntoIterator<Item = (&'a str, &'a [String])>, need: &str) -> bool {
    bindings.into_iter().any(|(role, members)| grants(role, need) && members.iter().any(|m| is_service_agent(m)))
}

async fn check(s: &Shared, what: &str, resource: String, need: &str) -> Check {
    let name = format!("permissions: {what} {resource}");
    match s.iam.get_iam_policy().set_resource(&resource).send().await {
        Ok(policy) => {
            let held = agent_holds(policy.bindings.iter().map(|b| (b.role.as_str(), b.members.as_slice())), need);
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

#[cfg(test)]
mod tests {
    use super::agent_holds;

    const AGENT: &str = "serviceAccount:service-123456789@gcp-sa-pubsub.iam.gserviceaccount.com";

    fn holds(bindings: &[(&str, &[&str])], need: &str) -> bool {
        let owned: Vec<(String, Vec<String>)> =
            bindings.iter().map(|(r, m)| (r.to_string(), m.iter().map(|m| m.to_string()).collect())).collect();
        agent_holds(owned.iter().map(|(r, m)| (r.as_str(), m.as_slice())), need)
    }

    #[test]
    fn the_service_agent_needs_the_role_or_one_including_it() {
        let publisher = "roles/pubsub.publisher";
        assert!(holds(&[(publisher, &["user:ops@example.com", AGENT])], publisher));
        assert!(holds(&[("roles/pubsub.editor", &[AGENT])], publisher));
        assert!(!holds(&[(publisher, &["serviceAccount:app@p.iam.gserviceaccount.com"])], publisher), "not the agent");
        assert!(!holds(&[("roles/pubsub.subscriber", &[AGENT])], publisher), "the other role");
        assert!(!holds(&[], "roles/pubsub.subscriber"), "no bindings");
        let lookalike = "serviceAccount:service-1@gcp-sa-pubsub.iam.gserviceaccount.com.evil.example";
        assert!(!holds(&[(publisher, &[lookalike])], publisher));
    }
}
