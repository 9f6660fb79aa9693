//! tidings metadata on Pub/Sub messages: one attribute (`tidings`).

pub use tidings_core::wire::{from_micros, micros, WireMeta as Meta, META_ATTRIBUTE};
