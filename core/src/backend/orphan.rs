//! Resources a subscription left behind when it was deleted.

use serde::Serialize;

/// A resource under the name prefix that belongs to a subscription which no longer exists, such as the dead-letter
/// topic and subscription a Pub/Sub subscription keeps, or the dead-letter queue of an SQS queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    /// What it is, such as `dead-letter topic`, `dead-letter subscription`, `dead-letter queue`.
    pub kind: String,
    /// Its resource name, as the backend's console shows it; `tidings doctor` lists it with [`Orphan::describe`].
    pub resource: String,
    /// The resource name of the subscription it belonged to (gone).
    pub subscription: String,
}

impl Orphan {
    /// An orphan of `kind`.
    pub fn new(kind: impl Into<String>, resource: impl Into<String>, subscription: impl Into<String>) -> Self {
        Self { kind: kind.into(), resource: resource.into(), subscription: subscription.into() }
    }

    /// One line for a person: what it is, whose it was, and what to do.
    pub fn describe(&self) -> String {
        format!(
            "{} {} is left from the subscription {}, which no longer exists: delete it, or recreate the subscription \
             (an application subscribing again does) to use it again",
            self.kind, self.resource, self.subscription
        )
    }
}
