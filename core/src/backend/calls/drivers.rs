//! Driver wrappers that run every call of a topic's or subscription's driver within its [`Scope`], so the API calls a
//! backend counts with [`ApiCalls::count`](super::ApiCalls::count) carry the topic and subscription labels. Core
//! wraps the drivers of backends that count calls ([`crate::Backend::api_calls`]); others run unwrapped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{scoped, Scope, SCOPE};
use crate::backend::{AckId, DeadLetterRequest, OutgoingMessage, ReceivedMessage, SubscriptionDriver, TopicDriver};
use crate::dead_letter::{DeadLetters, HeldLetter, LetterPage};
use crate::{PublishReport, Result};

/// A topic driver whose calls run within a scope.
#[derive(Debug)]
pub(crate) struct ScopedTopic {
    pub(crate) scope: Scope,
    pub(crate) inner: Arc<dyn TopicDriver>,
}

#[async_trait]
impl TopicDriver for ScopedTopic {
    async fn publish(&self, batch: &[OutgoingMessage]) -> Result<PublishReport> {
        scoped(self.scope.clone(), self.inner.publish(batch)).await
    }
    fn publish_now(&self, batch: &mut [OutgoingMessage]) -> Option<Result<()>> {
        SCOPE.sync_scope(self.scope.clone(), || self.inner.publish_now(batch))
    }
    async fn cancel(&self, id: &crate::MessageId) -> Result<bool> {
        scoped(self.scope.clone(), self.inner.cancel(id)).await
    }
}

/// A subscription driver whose calls run within a scope.
#[derive(Debug)]
pub(crate) struct ScopedSubscription {
    pub(crate) scope: Scope,
    pub(crate) inner: Arc<dyn SubscriptionDriver>,
}

#[async_trait]
impl SubscriptionDriver for ScopedSubscription {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        scoped(self.scope.clone(), self.inner.receive(max, wait)).await
    }
    async fn ack(&self, ids: Vec<AckId>) -> Result<()> {
        scoped(self.scope.clone(), self.inner.ack(ids)).await
    }
    async fn nack(&self, items: Vec<(AckId, Duration)>) -> Result<()> {
        scoped(self.scope.clone(), self.inner.nack(items)).await
    }
    async fn extend_lease(&self, ids: Vec<AckId>, by: Duration) -> Result<()> {
        scoped(self.scope.clone(), self.inner.extend_lease(ids, by)).await
    }
    async fn dead_letter(&self, items: Vec<DeadLetterRequest>) -> Result<()> {
        scoped(self.scope.clone(), self.inner.dead_letter(items)).await
    }
    fn dead_letter_queue(self: Arc<Self>) -> Option<Arc<dyn DeadLetters>> {
        let inner = self.inner.clone().dead_letter_queue()?;
        Some(Arc::new(ScopedDeadLetters { scope: self.scope.clone(), inner }))
    }
    async fn requeue(&self, messages: Vec<ReceivedMessage>) -> Result<()> {
        scoped(self.scope.clone(), self.inner.requeue(messages)).await
    }
    async fn close(&self) -> Result<()> {
        scoped(self.scope.clone(), self.inner.close()).await
    }
    async fn backlog(&self) -> Result<Option<u64>> {
        scoped(self.scope.clone(), self.inner.backlog()).await
    }
    async fn backlog_detail(&self) -> Result<crate::backend::BacklogDetail> {
        scoped(self.scope.clone(), self.inner.backlog_detail()).await
    }
}

/// A dead-letter queue whose calls run within its subscription's scope.
#[derive(Debug)]
pub(crate) struct ScopedDeadLetters {
    pub(crate) scope: Scope,
    pub(crate) inner: Arc<dyn DeadLetters>,
}

#[async_trait]
impl DeadLetters for ScopedDeadLetters {
    async fn read(&self, cursor: Option<&str>, max: usize) -> Result<LetterPage> {
        scoped(self.scope.clone(), self.inner.read(cursor, max)).await
    }
    async fn restore(&self, letters: Vec<HeldLetter>) -> Result<()> {
        scoped(self.scope.clone(), self.inner.restore(letters)).await
    }
    async fn delete(&self, handles: Vec<AckId>) -> Result<()> {
        scoped(self.scope.clone(), self.inner.delete(handles)).await
    }
    async fn release(&self, handles: Vec<AckId>) -> Result<()> {
        scoped(self.scope.clone(), self.inner.release(handles)).await
    }
}
