//! What travels beside a payload: `Nats-Msg-Id` (the tidings id, for JetStream's de-duplication), tidings' metadata
//! in one header (`tidings`), and the application's attributes as the other headers. And what a delivery's reply
//! subject says (`$JS.ACK...`: delivery count, stream sequence, timestamp).

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::header::{HeaderMap, HeaderName, HeaderValue, NATS_MESSAGE_ID};
use tidings_core::{Attributes, Error, Result};

pub use tidings_core::backend::time::{from_micros, micros};
pub use tidings_core::backend::wire::{WireMeta as Meta, META_ATTRIBUTE};

/// Headers a message may carry for the application (NATS has no count limit; they share `max_payload`).
pub const MAX_USER_ATTRIBUTES: usize = 32;

/// Checks that an attribute survives as a NATS header: a header name (visible ASCII, no ':'), not in NATS's own
/// `Nats-` namespace, and a value without line breaks or surrounding whitespace (the protocol trims it).
pub fn check_attribute(topic: &str, name: &str, value: &str) -> Result<()> {
    let rule = if HeaderName::from_str(name).is_err() || name.chars().any(|c| c.is_whitespace()) {
        Some("a NATS header name is visible ASCII without ':' or whitespace")
    } else if name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-") {
        Some("names starting with \"Nats-\" are reserved by NATS")
    } else if HeaderValue::from_str(value).is_err() {
        Some("a NATS header value cannot contain a line break")
    } else if value.trim() != value {
        Some("NATS trims leading and trailing whitespace off header values")
    } else {
        None
    };
    match rule {
        Some(rule) => Err(Error::invalid(format!(
            "attribute {name:?} = {value:?} on topic {topic:?} cannot be sent over NATS: {rule}"
        ))),
        None => Ok(()),
    }
}

/// The headers of an outgoing message (attributes already checked).
pub fn headers(dedup_id: &str, meta: &Meta, attributes: &Attributes) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(NATS_MESSAGE_ID, dedup_id);
    h.insert(META_ATTRIBUTE, meta.encode());
    for (k, v) in attributes {
        h.insert(k.as_str(), v.as_str());
    }
    h
}

/// Splits received headers into tidings metadata, `Nats-Msg-Id`, and the application's attributes.
pub fn split(headers: Option<&HeaderMap>) -> (Option<Meta>, Option<String>, Attributes) {
    let (mut meta, mut msg_id, mut user) = (None, None, Attributes::new());
    for (k, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let Some(v) = values.last() else { continue };
        let name: &str = k.as_ref();
        if name == META_ATTRIBUTE && meta.is_none() {
            // A foreign producer's header of the same name that is not tidings metadata stays an attribute.
            match Meta::decode(v.as_str()) {
                Some(m) => meta = Some(m),
                None => {
                    user.insert(name.to_string(), v.as_str().to_string());
                }
            }
        } else if name.eq_ignore_ascii_case(NATS_MESSAGE_ID.as_ref()) {
            msg_id = Some(v.as_str().to_string());
        } else if !(name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-")) {
            user.insert(name.to_string(), v.as_str().to_string());
        }
    }
    (meta, msg_id, user)
}

/// What a JetStream reply subject says about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Deliveries of this message to the consumer so far (1 for the first).
    pub delivered: u64,
    /// The message's sequence in its stream.
    pub stream_seq: u64,
    /// When it was stored.
    pub stored: SystemTime,
}

/// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` and the newer form with domain
/// and account hash (`$JS.ACK.<domain>.<hash>.<stream>...`).
pub fn delivery(reply: &str) -> Option<Delivery> {
    // Without allocating: every ack parses its reply subject. The fields used are within the first 12 tokens.
    let (mut t, mut len) = ([""; 12], 0);
    for token in reply.split('.') {
        if let Some(slot) = t.get_mut(len) {
            *slot = token;
        }
        len += 1;
    }
    if len < 9 || t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    let off = if len == 9 { 2 } else { 4 };
    let n = |i: usize| t.get(off + i).and_then(|v| v.parse::<u64>().ok());
    Some(Delivery { delivered: n(2)?, stream_seq: n(3)?, stored: UNIX_EPOCH + Duration::from_nanos(n(5)?) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects_of_both_forms_parse() {
        let v1 = delivery("$JS.ACK.orders.orders--email.3.42.7.1700000000000000000.5").unwrap();
        assert_eq!((v1.delivered, v1.stream_seq), (3, 42));
        assert_eq!(v1.stored, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let v2 = delivery("$JS.ACK.hub.ACCHASH.orders.orders--email.1.9.9.1700000000000000000.0.tok").unwrap();
        assert_eq!((v2.delivered, v2.stream_seq), (1, 9));
        assert_eq!(delivery("_INBOX.abc"), None);
    }

    #[test]
    fn attributes_that_would_not_survive_are_refused_with_the_rule() {
        check_attribute("t", "source", "web").unwrap();
        for (k, v, rule) in [
            ("a:b", "x", "header name"),
            ("a b", "x", "header name"),
            ("Nats-Msg-Id", "x", "reserved by NATS"),
            ("k", "line\r\nbreak", "line break"),
            ("k", " padded", "whitespace"),
        ] {
            let e = check_attribute("t", k, v).unwrap_err().to_string();
            assert!(e.contains(rule) && e.contains(&format!("{k:?}")), "{e}");
        }
    }

    #[test]
    fn headers_round_trip() {
        let meta = Meta { id: "m1".into(), ts: 5, ..Default::default() };
        let mut attrs = Attributes::new();
        attrs.insert("tenant".into(), "acme".into());
        let h = headers("m1", &meta, &attrs);
        let (m, id, a) = split(Some(&h));
        assert_eq!((m, id, a), (Some(meta), Some("m1".into()), attrs));
    }

    #[test]
    fn a_foreign_header_named_tidings_that_is_not_metadata_stays_an_attribute() {
        let mut h = HeaderMap::new();
        h.insert(META_ATTRIBUTE, "blue");
        let (m, _, a) = split(Some(&h));
        assert_eq!(m, None);
        assert_eq!(a.get(META_ATTRIBUTE).map(String::as_str), Some("blue"));
    }
}
