#![doc = include_str!("../README.md")]
//!
//! ## API
//!
//! - [`IdempotentConsumer`]: [`process`](IdempotentConsumer::process) and
//!   [`record_in_transaction`](IdempotentConsumer::record_in_transaction);
//!   results are [`Processed`], keys anything [`IdempotencyKey`].
//! - [`IdempotencyStore`]: the table's records, step by step
//!   ([`claim`](IdempotencyStore::claim), [`complete`](IdempotencyStore::complete),
//!   [`release`](IdempotencyStore::release), [`get`](IdempotencyStore::get),
//!   [`transaction_marker`](IdempotencyStore::transaction_marker),
//!   [`commit_with_marker`](IdempotencyStore::commit_with_marker)), and
//!   [`create_idempotency_table`].
//! - [`outbox_event_from_eventbridge`] / [`outbox_event_from_detail`]: the
//!   [`OutboxEvent`](outbox_core::OutboxEvent) in what EventBridge delivers
//!   (the envelope or a CloudEvents event, whichever the relay publishes);
//!   [`resolve_claim_check`]: the whole event, when it was published by
//!   claim-check (too large for EventBridge).
//! - [`typed_event_from_eventbridge`] / [`typed_event`]: the payload as the
//!   service's own event type (a struct or an enum deriving `Event`), with an
//!   error naming an unknown type or the field that failed.
//! - [`ConsumerError`], with [`is_retryable`](ConsumerError::is_retryable).

mod claim_check;
mod consumer;
mod error;
mod eventbridge;
mod store;
mod transaction;
mod typed;

pub use claim_check::{ClaimCheckError, resolve_claim_check};
pub use consumer::{IdempotencyKey, IdempotentConsumer, Processed};
pub use error::ConsumerError;
pub use eventbridge::{outbox_event_from_detail, outbox_event_from_eventbridge};
pub use store::{
    ATTR_EXPIRES_AT, ATTR_KEY, ATTR_RESULT, ATTR_STATUS, ATTR_TTL, Claim, DEFAULT_COMPLETED_TTL,
    DEFAULT_IN_PROGRESS_EXPIRY, IdempotencyRecord, IdempotencyStore, MAX_TRANSACT_ITEMS, RecordStatus,
    STATUS_COMPLETED, STATUS_IN_PROGRESS, create_idempotency_table,
};
pub use typed::{TypedDeliveryError, TypedEvent, typed_event, typed_event_from_eventbridge};
