//! [`IdempotentConsumer`]: runs a handler at most once per event id.

use std::future::Future;

use aws_sdk_dynamodb::types::TransactWriteItem;
use outbox_core::OutboxEvent;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{Claim, ConsumerError, IdempotencyStore};

/// What identifies an event for de-duplication: an [`OutboxEvent`] (its
/// id), or the id itself as text or a [`Uuid`].
pub trait IdempotencyKey {
    /// The event id.
    fn idempotency_id(&self) -> String;
}

impl IdempotencyKey for OutboxEvent {
    fn idempotency_id(&self) -> String {
        self.id().to_string()
    }
}

impl IdempotencyKey for str {
    fn idempotency_id(&self) -> String {
        self.to_owned()
    }
}

impl IdempotencyKey for String {
    fn idempotency_id(&self) -> String {
        self.clone()
    }
}

impl IdempotencyKey for Uuid {
    fn idempotency_id(&self) -> String {
        self.to_string()
    }
}

impl<K: IdempotencyKey + ?Sized> IdempotencyKey for &K {
    fn idempotency_id(&self) -> String {
        (**self).idempotency_id()
    }
}

/// The result of [`IdempotentConsumer::process`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed<T> {
    /// The handler ran now and returned this.
    Ran(T),
    /// A duplicate delivery: the handler did not run; this is the result it
    /// returned the first time.
    Duplicate(T),
}

impl<T> Processed<T> {
    /// Whether this delivery was a duplicate.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Duplicate(_))
    }

    /// The handler's result (now or the first time).
    pub fn value(&self) -> &T {
        match self {
            Self::Ran(v) | Self::Duplicate(v) => v,
        }
    }

    /// The handler's result (now or the first time).
    pub fn into_value(self) -> T {
        match self {
            Self::Ran(v) | Self::Duplicate(v) => v,
        }
    }
}

/// Runs a consumer's handler at most once per event id, over an
/// [`IdempotencyStore`].
///
/// Two ways to use it:
///
/// - [`process`](Self::process): claim the id (in progress, with an expiry),
///   run the handler, store its result (completed). A duplicate delivery gets
///   the stored result without running the handler; one that arrives while
///   the first is running gets [`ConsumerError::InProgress`] (retryable); a
///   handler error removes the claim so that a retry runs again. For handlers
///   with side effects anywhere (an e-mail, an HTTP call, another database).
/// - [`record_in_transaction`](Self::record_in_transaction): for consumers
///   whose effect is a DynamoDB write, the id is recorded in the same
///   `TransactWriteItems` as that write, so both land or neither does: an
///   exactly-once effect, with no in-progress state and no expiry.
#[derive(Debug, Clone)]
pub struct IdempotentConsumer {
    store: IdempotencyStore,
}

impl IdempotentConsumer {
    /// A consumer recording event ids in `store`.
    pub fn new(store: IdempotencyStore) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &IdempotencyStore {
        &self.store
    }

    /// Runs `handler` for the event `key` unless it already ran:
    ///
    /// 1. a conditional put of an in-progress record (there is none, or only
    ///    an expired claim);
    /// 2. `handler()`; on `Err`, the claim is removed and the error returned
    ///    as [`ConsumerError::Handler`];
    /// 3. the result, as JSON, is stored in a completed record and returned
    ///    as [`Processed::Ran`].
    ///
    /// A completed record returns its stored result as
    /// [`Processed::Duplicate`] without calling `handler`; a live claim of
    /// another delivery is [`ConsumerError::InProgress`]. If storing the
    /// result fails, the error is returned and the claim stays until it
    /// expires; a later delivery then runs the handler again.
    pub async fn process<K, F, Fut, T, E>(&self, key: &K, handler: F) -> Result<Processed<T>, ConsumerError>
    where
        K: IdempotencyKey + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        T: Serialize + DeserializeOwned,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let id = key.idempotency_id();
        match self.store.claim(&id).await? {
            Claim::Completed(record) => {
                let stored = record.result.as_deref().unwrap_or("null");
                tracing::info!(event_id = %id, "duplicate delivery absorbed");
                serde_json::from_str(stored)
                    .map(Processed::Duplicate)
                    .map_err(|source| ConsumerError::StoredResult { id, source })
            }
            Claim::InProgress { expires_at } => {
                tracing::info!(event_id = %id, %expires_at, "event in progress elsewhere");
                Err(ConsumerError::InProgress { id, expires_at })
            }
            Claim::Claimed { .. } => match handler().await {
                Err(err) => {
                    self.release_after_failure(&id).await;
                    Err(ConsumerError::Handler(err.into()))
                }
                Ok(value) => match serde_json::to_string(&value) {
                    Err(source) => {
                        self.release_after_failure(&id).await;
                        Err(ConsumerError::ResultNotSerializable { id, source })
                    }
                    Ok(text) => {
                        self.store.complete(&id, &text).await?;
                        tracing::debug!(event_id = %id, "event processed");
                        Ok(Processed::Ran(value))
                    }
                },
            },
        }
    }

    async fn release_after_failure(&self, id: &str) {
        if let Err(err) = self.store.release(id).await {
            // The claim then expires on its own.
            tracing::warn!(event_id = %id, error = %err, "releasing the claim failed");
        }
    }

    /// The transactional mode's idempotency record for `key`, to append to
    /// the consumer's own `TransactWriteItems` (see
    /// [`IdempotencyStore::transaction_marker`]).
    pub fn transaction_marker<K: IdempotencyKey + ?Sized>(
        &self,
        key: &K,
    ) -> Result<TransactWriteItem, ConsumerError> {
        self.store.transaction_marker(&key.idempotency_id())
    }

    /// Commits the consumer's own `items` and the id of event `key` in one
    /// `TransactWriteItems`: both or neither. An id already recorded is
    /// [`ConsumerError::Duplicate`] (nothing written: acknowledge the
    /// delivery); a failed condition of one of `items` is
    /// [`ConsumerError::ConditionFailed`] (nothing written, the id not
    /// recorded).
    pub async fn record_in_transaction<K: IdempotencyKey + ?Sized>(
        &self,
        key: &K,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), ConsumerError> {
        self.store.commit_with_marker(&key.idempotency_id(), items).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_event_ids() {
        let id = Uuid::now_v7();
        assert_eq!(id.idempotency_id(), id.to_string());
        assert_eq!("e-1".idempotency_id(), "e-1");
        assert_eq!(String::from("e-2").idempotency_id(), "e-2");
        assert_eq!((&&id).idempotency_id(), id.to_string());
    }

    #[test]
    fn processed_says_whether_it_was_a_duplicate() {
        let ran = Processed::Ran(1);
        let dup = Processed::Duplicate(1);
        assert!(!ran.is_duplicate() && dup.is_duplicate());
        assert_eq!(ran.value(), dup.value());
        assert_eq!(dup.into_value(), 1);
    }
}
