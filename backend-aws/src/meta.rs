//! tidings metadata on SQS/SNS messages: one attribute (`tidings`), so users keep 9 of the 10 attributes that raw
//! delivery allows.

use std::collections::HashMap;

use tidings_core::Attributes;

pub use tidings_core::time::{from_micros, micros};
pub use tidings_core::wire::{WireMeta as Meta, META_ATTRIBUTE};

/// AWS allows 10 message attributes per message with raw delivery; one is tidings'.
pub const MAX_USER_ATTRIBUTES: usize = 9;

/// Splits received SQS message attributes into tidings metadata and user attributes (string-valued ones; binary
/// attributes of foreign producers are dropped).
pub fn split(attrs: Option<&HashMap<String, aws_sdk_sqs::types::MessageAttributeValue>>) -> (Option<Meta>, Attributes) {
    let mut meta = None;
    let mut user = Attributes::new();
    for (k, v) in attrs.into_iter().flatten() {
        let Some(s) = v.string_value() else { continue };
        if k == META_ATTRIBUTE {
            meta = Meta::decode(s);
        } else {
            user.insert(k.clone(), s.to_string());
        }
    }
    (meta, user)
}
