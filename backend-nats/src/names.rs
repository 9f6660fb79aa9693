//! Names: a stream per topic (`<prefix><topic>`, subjects `<stream>.>`), a durable consumer per subscription
//! (`<prefix><topic>--<sub>`), a dead-letter stream per subscription (`<consumer>-dlq`), and a subject per ordering
//! key.

use tidings_core::backend::{SubscriptionSpec, TopicSpec};
use tidings_core::{Error, Result};

/// JetStream names may not hold these (they are subject or path syntax).
fn check(what: &str, spec_name: &str, name: &str) -> Result<()> {
    let bad = name.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
    if name.is_empty() || name.len() > 255 || bad.is_some() {
        return Err(Error::invalid(format!(
            "{spec_name:?} maps to the JetStream {what} name {name:?}, which NATS does not accept: names are 1-255 \
             characters without whitespace, '.', '*', '>', '/' or '\\' (check name_prefix and names overrides)"
        )));
    }
    Ok(())
}

/// A topic's stream.
#[derive(Debug, Clone)]
pub struct TopicNames {
    pub stream: String,
}

impl TopicNames {
    pub fn of(spec: &TopicSpec) -> Result<Self> {
        check("stream", &spec.name, &spec.resource)?;
        Ok(Self { stream: spec.resource.clone() })
    }

    /// The stream's subjects: every subject under its name.
    pub fn filter(&self) -> String {
        format!("{}.>", self.stream)
    }

    /// The subject a message is published on: one per ordering key, one for messages without a key.
    pub fn subject(&self, key: Option<&str>) -> String {
        match key {
            Some(k) => format!("{}.k.{:016x}", self.stream, fnv1a(k.as_bytes())),
            None => format!("{}.m", self.stream),
        }
    }
}

/// A subscription's consumer and dead-letter stream.
#[derive(Debug, Clone)]
pub struct SubNames {
    pub topic: TopicNames,
    pub consumer: String,
    pub dlq_stream: String,
}

impl SubNames {
    pub fn of(spec: &SubscriptionSpec) -> Result<Self> {
        let topic = TopicNames::of(&spec.topic)?;
        let label = format!("{}.{}", spec.topic.name, spec.name);
        check("consumer", &label, &spec.resource)?;
        let dlq_stream = format!("{}-dlq", spec.resource);
        check("stream", &label, &dlq_stream)?;
        Ok(Self { topic, consumer: spec.resource.clone(), dlq_stream })
    }

    /// The single subject of the dead-letter stream.
    pub fn dlq_subject(&self) -> String {
        format!("{}.dead", self.dlq_stream)
    }

    /// Subject of pull requests.
    pub fn next_subject(&self) -> String {
        format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", self.topic.stream, self.consumer)
    }
}

/// FNV-1a, 64 bits: a stable, short subject token for an ordering key of any characters.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::TopicConfig;

    #[test]
    fn subjects_and_bad_names() {
        let spec = TopicSpec::new("signups", "dev-signups", TopicConfig::at_least_once());
        let t = TopicNames::of(&spec).unwrap();
        assert_eq!(t.filter(), "dev-signups.>");
        assert_eq!(t.subject(None), "dev-signups.m");
        assert_eq!(t.subject(Some("a.b *>")), t.subject(Some("a.b *>")));
        assert_ne!(t.subject(Some("alice")), t.subject(Some("bob")));
        assert!(t.subject(Some("a.b *>")).split('.').count() == 3);
        let bad = TopicSpec::new("signups", "dev.signups", TopicConfig::at_least_once());
        let e = TopicNames::of(&bad).unwrap_err().to_string();
        assert!(e.contains("\"dev.signups\"") && e.contains("'.'"), "{e}");
    }
}
