//! From cloud resource names back to the logical names code uses: the prefix stripped and `[names]` overrides
//! inverted.

use crate::config::Settings;

/// The logical topic name of a topic resource, or `None` when it is not under the prefix.
pub fn logical_topic(settings: &Settings, resource: &str) -> Option<String> {
    let base = resource.strip_prefix(settings.name_prefix.as_str())?;
    let overridden = settings.names.iter().find(|(logical, cloud)| !logical.contains('.') && *cloud == base);
    Some(overridden.map_or_else(|| base.to_string(), |(logical, _)| logical.clone()))
}

/// The logical name of a subscription resource of `topic` (a logical name), or `None` when it does not follow the
/// naming scheme (`<prefix><topic>--<subscription>` or a `names."<topic>.<subscription>"` override).
pub fn logical_subscription(settings: &Settings, topic: &str, resource: &str) -> Option<String> {
    let base = resource.strip_prefix(settings.name_prefix.as_str())?;
    let key_prefix = format!("{topic}.");
    if let Some((key, _)) = settings.names.iter().find(|(k, cloud)| k.starts_with(&key_prefix) && *cloud == base) {
        return Some(key[key_prefix.len()..].to_string());
    }
    base.strip_prefix(&format!("{topic}--")).filter(|s| !s.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_back_through_prefix_and_overrides() {
        let s = Settings::from_toml(
            "name_prefix = \"dev-\"\n[names]\nsignups = \"user-signups\"\n\"signups.audit\" = \"audit-log\"\n",
        )
        .unwrap();
        assert_eq!(logical_topic(&s, "dev-user-signups").as_deref(), Some("signups"));
        assert_eq!(logical_topic(&s, "dev-orders").as_deref(), Some("orders"));
        assert_eq!(logical_topic(&s, "prod-orders"), None);
        assert_eq!(logical_subscription(&s, "signups", "dev-signups--email").as_deref(), Some("email"));
        assert_eq!(logical_subscription(&s, "signups", "dev-audit-log").as_deref(), Some("audit"));
        assert_eq!(logical_subscription(&s, "signups", "dev-orders--email"), None);
        assert_eq!(s.subscription_resource_name("signups", "email"), "dev-signups--email");
    }
}
