//! The DynamoDB writer of **outbox-relay**: the outbox item schema
//! ([`OutboxSchema`]) and the writer ([`DynamoDbOutboxWriter`]) that commits
//! business changes and their events in one `TransactWriteItems`, with the
//! service limits checked before the call. It holds no relay code: the
//! stream decoder and runner are in `outbox-dynamodb-relay`.
//!
//! Most services use the typed layer on top: [`DynamoDbAggregates`] loads an
//! [`Aggregate`] and saves its new state with its [`Event`]s for a
//! [`Command`], so that a retried request writes nothing twice (see its
//! example). The builder below is for the transactions it does not cover.
//!
//! ```no_run
//! use aws_sdk_dynamodb::types::AttributeValue;
//! use outbox_core::{OutboxEvent, SystemClock};
//! use outbox_dynamodb::{DynamoDbOutboxWriter, OutboxSchema, OutboxTransaction, put_versioned};
//! use serde_json::json;
//! use std::collections::HashMap;
//!
//! # async fn example(client: aws_sdk_dynamodb::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let writer = DynamoDbOutboxWriter::new(client, OutboxSchema::new("orders"));
//!
//! // The aggregate, at version 2 if it was at version 1 (optimistic concurrency).
//! let order = HashMap::from([
//!     ("pk".to_string(), AttributeValue::S("Order#o-42".into())),
//!     ("sk".to_string(), AttributeValue::S("ORDER".into())),
//!     ("status".to_string(), AttributeValue::S("PLACED".into())),
//! ]);
//! let event = OutboxEvent::builder("com.example.orders", "OrderPlaced")
//!     .aggregate("Order", "o-42")
//!     .sequence(2)
//!     .payload(&json!({ "total": 1999 }))
//!     .build(&SystemClock)?;
//!
//! let tx = OutboxTransaction::new()
//!     .operation(put_versioned("orders", order, "version", Some(1))?)
//!     .event(event) // lands in partition `Order#o-42`, next to the aggregate
//!     .client_request_token("place-o-42-attempt-1");
//! let receipt = writer.commit(tx).await?;
//! println!("committed {:?}", receipt.event_ids);
//! # Ok(())
//! # }
//! ```

mod aggregate;
mod error;
mod item;
mod limits;
mod writer;

pub use aggregate::{
    COMMAND_SORT_KEY_PREFIX, DEFAULT_VERSION_ATTRIBUTE, DynamoDbAggregates, STANDALONE_AGGREGATE_TYPE,
    STATE_SORT_KEY,
};
pub use error::{DecodeError, WriteError};
pub use item::{
    ATTR_AGGREGATE_ID, ATTR_AGGREGATE_TYPE, ATTR_EVENT_ID, ATTR_EVENT_TYPE, ATTR_METADATA, ATTR_OCCURRED_AT,
    ATTR_PAYLOAD, ATTR_SEQUENCE, ATTR_SOURCE, ATTR_TRACE_PARENT, DEFAULT_MAX_EVENT_BYTES, Item, MARKER_VALUE,
    OutboxSchema,
};
pub use limits::{
    MAX_CLIENT_REQUEST_TOKEN_LEN, MAX_ITEM_SIZE_BYTES, MAX_TRANSACT_ITEMS, MAX_TRANSACTION_SIZE_BYTES,
    item_size, published_size,
};
/// The core crate, for what the derive macro and typed events name.
pub use outbox_core;
pub use outbox_core::{
    Aggregate, Clock, Command, EnvelopeError, Event, Events, OutboxEvent, OutboxEventBuilder, Payload, Saved,
    SystemClock, TypedEventError, Versioned,
};
pub use writer::{
    CommitReceipt, DynamoDbOutboxWriter, OutboxTransaction, build_transact_items, put_if_absent,
    put_versioned,
};
