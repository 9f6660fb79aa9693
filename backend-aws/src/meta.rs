//! tidings metadata on SQS/SNS messages: one attribute (`tidings`), so users keep 9 of the 10 attributes that raw
//! delivery allows.

use std::collections::HashMap;

use tidings_core::Attributes;

pub use tidings_core::backend::time::{from_micros, micros};
pub use tidings_core::backend::wire::{WireMeta as Meta, META_ATTRIBUTE};

/// AWS allows 10 message attributes per message with raw delivery; one is tidings'.
pub const MAX_USER_ATTRIBUTES: usize = 9;

/// Splits received SQS message attributes into tidings metadata and user attributes. Nothing a foreign producer
/// sends is dropped: a `Binary` attribute arrives base64-encoded (standard alphabet, padded) under its own name, and
/// an attribute named `tidings` that is not tidings metadata arrives as an ordinary attribute.
pub fn split(attrs: Option<HashMap<String, aws_sdk_sqs::types::MessageAttributeValue>>) -> (Option<Meta>, Attributes) {
    use base64::Engine;
    let mut meta = None;
    let mut user = Attributes::new();
    for (k, v) in attrs.into_iter().flatten() {
        if k == META_ATTRIBUTE {
            if let Some(m) = v.string_value.as_deref().and_then(Meta::decode) {
                meta = Some(m);
                continue;
            }
        }
        let value = match (v.string_value, v.binary_value) {
            (Some(s), _) => s,
            (None, Some(b)) => base64::engine::general_purpose::STANDARD.encode(b.as_ref()),
            (None, None) => String::new(),
        };
        user.insert(k, value);
    }
    (meta, user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::primitives::Blob;
    use aws_sdk_sqs::types::MessageAttributeValue as V;

    #[test]
    fn foreign_binary_and_tidings_named_attributes_are_kept() {
        let mut attrs = HashMap::new();
        attrs.insert(
            "blob".to_string(),
            V::builder().data_type("Binary").binary_value(Blob::new(vec![0, 1, 255])).build().unwrap(),
        );
        attrs.insert("n".to_string(), V::builder().data_type("Number").string_value("42").build().unwrap());
        attrs.insert(
            META_ATTRIBUTE.to_string(),
            V::builder().data_type("String").string_value("not ours").build().unwrap(),
        );
        let (meta, user) = split(Some(attrs.clone()));
        assert!(meta.is_none());
        assert_eq!(user.get("blob").map(String::as_str), Some("AAH/"));
        assert_eq!(user.get("n").map(String::as_str), Some("42"));
        assert_eq!(user.get(META_ATTRIBUTE).map(String::as_str), Some("not ours"));
        let ours = Meta { id: "a".into(), ts: 1, ..Default::default() }.encode();
        attrs.insert(META_ATTRIBUTE.to_string(), V::builder().data_type("String").string_value(ours).build().unwrap());
        let (meta, user) = split(Some(attrs.clone()));
        assert_eq!(meta.unwrap().id, "a");
        assert!(!user.contains_key(META_ATTRIBUTE));
    }
}
