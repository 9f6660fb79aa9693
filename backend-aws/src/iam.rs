//! `tidings doctor` on AWS (feature `iam-check`): the caller from STS `GetCallerIdentity`, then the IAM policy
//! simulator (`SimulatePrincipalPolicy`) for the actions the application needs on its own topics and queues. Where
//! the endpoint serves neither (LocalStack without IAM), the check is skipped, naming what was left unchecked.

use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::PolicyEvaluationDecisionType as Decision;
use tidings_core::admin::Check;
use tidings_core::backend::{SubscriptionSpec, TopicSpec};
use tidings_core::topology::Topology;

use crate::provision::{queue_names, topic_name};
use crate::Shared;

/// An SDK error's code and message, without the raw response.
fn brief<E: ProvideErrorMetadata>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => "no error code or message (is the endpoint reachable?)".into(),
    }
}

/// The role behind an assumed-role session ARN (`arn:aws:sts::1:assumed-role/R/s` -> `arn:aws:iam::1:role/R`): the
/// simulator takes users and roles, not sessions.
fn principal(arn: &str) -> String {
    let Some((head, rest)) = arn.split_once(":assumed-role/") else { return arn.to_string() };
    let role = rest.split('/').next().unwrap_or(rest);
    format!("{}:role/{role}", head.replacen(":sts:", ":iam:", 1))
}

/// Simulates `actions` on `resources`; one check.
async fn simulate(
    iam: &aws_sdk_iam::Client,
    who: &str,
    name: String,
    actions: &[&str],
    resources: Vec<String>,
) -> Check {
    let out = iam
        .simulate_principal_policy()
        .policy_source_arn(who)
        .set_action_names(Some(actions.iter().map(|a| a.to_string()).collect()))
        .set_resource_arns(Some(resources))
        .max_items(1000)
        .send()
        .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let e = brief(&e);
            return Check::skipped(
                name,
                format!("not checkable: SimulatePrincipalPolicy failed ({e}); unchecked: {}", actions.join(", ")),
            );
        }
    };
    let mut denied = Vec::new();
    for r in out.evaluation_results() {
        let specific = r.resource_specific_results();
        if specific.is_empty() && r.eval_decision() != &Decision::Allowed {
            // One result per action and resource (the simulator may answer so instead of resource-specific results).
            let on = r.eval_resource_name().filter(|n| *n != "*").map(|n| format!(" on {n}")).unwrap_or_default();
            denied.push(format!("{}{on} ({})", r.eval_action_name(), r.eval_decision().as_str()));
        }
        for s in specific.iter().filter(|s| s.eval_resource_decision() != &Decision::Allowed) {
            denied.push(format!(
                "{} on {} ({})",
                r.eval_action_name(),
                s.eval_resource_name(),
                s.eval_resource_decision().as_str()
            ));
        }
    }
    if denied.is_empty() {
        Check::pass(name, format!("{who} may {}", actions.join(", ")))
    } else {
        Check::fail(name, format!("{who} is not allowed: {}", denied.join("; ")))
    }
}

/// The checks: SNS actions on the topics, SQS actions on the queues and dead-letter queues.
pub async fn permissions(s: &Shared, topology: &Topology, sns: &[&str], sqs: &[&str]) -> Vec<Check> {
    let sts = aws_sdk_sts::Client::new(&s.sdk);
    let me = match sts.get_caller_identity().send().await {
        Ok(me) => me,
        Err(e) => {
            let e = brief(&e);
            return vec![Check::skipped(
                "permissions",
                format!(
                    "not checkable: STS GetCallerIdentity failed ({e}); unchecked: {} and {}",
                    sns.join(", "),
                    sqs.join(", ")
                ),
            )];
        }
    };
    let (arn, account) = (me.arn().unwrap_or_default(), me.account().unwrap_or_default());
    if arn.ends_with(":root") {
        return vec![Check::skipped(
            "permissions",
            format!(
                "not checkable: the caller is the account's root user ({arn}), which may do everything and which the \
                 policy simulator does not evaluate; run doctor with the application's own credentials"
            ),
        )];
    }
    let partition = arn.split(':').nth(1).unwrap_or("aws");
    let region = s.sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let who = principal(arn);
    let (mut topics, mut queues) = (Vec::new(), Vec::new());
    for t in &topology.topics {
        let spec = TopicSpec::new(t.name.clone(), t.resource.clone(), t.config());
        topics.push(format!("arn:{partition}:sns:{region}:{account}:{}", topic_name(&spec)));
        for sub in &t.subscriptions {
            let sub = SubscriptionSpec::new(spec.clone(), sub.name.clone(), sub.resource.clone(), sub.config());
            let (q, dlq) = queue_names(&sub);
            queues.push(format!("arn:{partition}:sqs:{region}:{account}:{q}"));
            queues.push(format!("arn:{partition}:sqs:{region}:{account}:{dlq}"));
        }
    }
    if topics.is_empty() {
        return vec![Check::skipped(
            "permissions",
            "no topics in the topology (--topology FILE) to check permissions on",
        )];
    }
    let iam = aws_sdk_iam::Client::new(&s.sdk);
    let mut out = vec![simulate(&iam, &who, "permissions: SNS topics".into(), sns, topics).await];
    if !queues.is_empty() {
        out.push(simulate(&iam, &who, "permissions: SQS queues".into(), sqs, queues).await);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_session_is_checked_as_its_role() {
        assert_eq!(super::principal("arn:aws:sts::123:assumed-role/app/i-0abc"), "arn:aws:iam::123:role/app");
        assert_eq!(super::principal("arn:aws:iam::123:user/ops"), "arn:aws:iam::123:user/ops");
    }
}
