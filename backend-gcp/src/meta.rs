//! tidings metadata on Pub/Sub messages: one attribute (`tidings`).

pub use tidings_core::time::{from_micros, micros};
pub use tidings_core::wire::{WireMeta as Meta, META_ATTRIBUTE};
