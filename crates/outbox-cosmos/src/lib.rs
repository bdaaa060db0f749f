//! Cosmos DB side of **outbox-relay**: the outbox document schema, the
//! writer that commits aggregate changes and their events in one
//! transactional batch, the change-feed processor that relays them with
//! leases shared by several instances, and the decoder the Azure Functions
//! trigger host uses.
//!
//! ```no_run
//! use outbox_core::{OutboxEvent, SystemClock};
//! use outbox_cosmos::{BatchOperation, CosmosOutboxSchema, CosmosOutboxWriter, OutboxBatch, WriteError};
//! use serde_json::json;
//!
//! # async fn example(orders: azure_data_cosmos::clients::ContainerClient) -> Result<(), Box<dyn std::error::Error>> {
//! // `orders` is partitioned on `/pk`; its default TTL is on (-1) so outbox documents expire.
//! let writer = CosmosOutboxWriter::new(orders, CosmosOutboxSchema::new("/pk"));
//!
//! // The aggregate as read, with its etag (optimistic concurrency).
//! let etag = "\"00000000-0000-0000-0000-000000000000\"";
//! let order = json!({ "id": "o-42", "pk": "Order#o-42", "status": "PLACED", "version": 2 });
//! let event = OutboxEvent::builder("com.example.orders", "OrderPlaced")
//!     .aggregate("Order", "o-42")
//!     .sequence(2)
//!     .payload(&json!({ "total": 1999 }))
//!     .build(&SystemClock)?;
//!
//! let batch = OutboxBatch::new("Order#o-42")
//!     .operation(BatchOperation::replace_if_match("o-42", order, etag))
//!     .event(event); // an outbox document in partition `Order#o-42`, next to the aggregate
//! match writer.commit(batch).await {
//!     Ok(receipt) => println!("committed {:?}", receipt.event_ids),
//!     Err(e) if e.needs_fresh_read() => println!("lost a race at operation {:?}: read and retry", e.failed_operation()),
//!     Err(e) if e.is_retryable() => println!("retry later: {e}"),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(())
//! # }
//! ```

mod aggregate;
mod connect;
mod document;
mod error;
mod lease;
mod limits;
mod processor;
mod trigger;
mod writer;

pub use aggregate::{COMMAND_ID_PREFIX, CosmosAggregates, VERSION_FIELD};
pub use connect::{ConnectError, container_client, cosmos_client_with_key};
pub use document::{
    CosmosChangeDecoder, CosmosOutboxSchema, FIELD_AGGREGATE_ID, FIELD_AGGREGATE_TYPE, FIELD_EVENT_TYPE,
    FIELD_ID, FIELD_METADATA, FIELD_OCCURRED_AT, FIELD_PAYLOAD, FIELD_SEQUENCE, FIELD_SOURCE,
    FIELD_TRACE_PARENT, FIELD_TTL, MARKER_VALUE, MAX_SEQUENCE,
};
pub use error::{DecodeError, LeaseError, ProcessorError, WriteError};
pub use lease::{CosmosLeaseStore, LEASE_KIND, Lease, lease_id};
pub use limits::{MAX_BATCH_OPERATIONS, MAX_BATCH_REQUEST_BYTES};
/// The core crate, for what the derive macro and typed events name.
pub use outbox_core;
pub use outbox_core::{
    Aggregate, Command, Event, Events, OutboxEvent, Saved, SystemClock, TypedEventError, Versioned,
};
pub use processor::{CosmosChangeFeedProcessor, MAX_ITEMS_PER_PAGE, ProcessorConfig, ProcessorReport};
pub use trigger::{
    InvocationResponse, TriggerError, TriggerOutcome, relay_trigger_invocation, trigger_documents,
};
pub use writer::{
    BatchOperation, CommitReceipt, CosmosOutboxWriter, OutboxBatch, PreparedBatch, build_batch,
    interpret_batch_results,
};
