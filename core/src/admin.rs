//! Operator actions over any bus (the `tidings` CLI and the dashboard): an inventory of topics and subscriptions
//! with figures, reading, redriving and purging dead letters selectively, and the checks of `tidings doctor`.
//!
//! A backend whose state lives outside one process offers the operator's contract, [`Admin`] (defined with the rest
//! of the backend contract in [`crate::backend`]), through [`crate::Backend::admin`]; a backend whose state lives
//! inside one process (the in-memory bus) offers none, and [`Operator`] then works on the subscriptions running on the
//! bus.
//!
//! Every redrive moves a message by sending its copy first and removing the dead letter after the copy was
//! accepted, so an interrupted redrive leaves each message in the dead-letter queue, back in the subscription, or
//! (at worst, interrupted between the two steps) in both; never in neither.

mod names;
mod operator;

pub use crate::backend::admin::{Admin, SubscriptionResource, SubscriptionStats, TopicResource, Unknown};
pub use crate::backend::{Check, Orphan, Status};
pub use crate::dead_letter::{Pace, Select};
pub use names::{logical_subscription, logical_topic};
pub use operator::{Inventory, Operator, SubscriptionEntry, TopicEntry, UnknownField};
